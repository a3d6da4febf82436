"""`vtl-chat VIDEO --checkpoint DIR`: ask a trained model about a video in the terminal."""
from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
