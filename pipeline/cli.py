"""`vtl-pipeline`: manifest, extract, build-qa, import-vtimellm, inspect, synth.

Thin by design: each command parses its options into the frozen config of its module, calls one function and prints
where the outputs went. Heavy libraries (torch, ray, decord, open_clip) are imported inside the called functions, so
`vtl-pipeline --help` stays instant.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="vtl data pipeline: manifests → CLIP feature shards → training shards.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def fail(message: str, code: int = 2) -> None:
    """Stop with a clear one-line message (a wrong option, an unusable input) instead of a traceback."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
