"""`vtl-train --stage 1|2|3`: thin CLI over `train.loop.run` (options map 1:1 to `train.config.TrainConfig`)."""
from __future__ import annotations

import typer

app = typer.Typer(help="Train a time-aware video LLM (VTimeLLM recipe), stage 1, 2 or 3.", add_completion=False,
                  pretty_exceptions_enable=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
