"""`vtl-eval`: temporal grounding and dense-captioning evaluation, and scoring of existing predictions."""
from __future__ import annotations

import typer

app = typer.Typer(help="Evaluate a checkpoint (grounding, dvc) or score a predictions file.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
