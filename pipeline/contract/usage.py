"""How every vtl command line reads its options and reports a wrong one (vtl-pipeline, vtl-eval, vtl-chat,
vtl-train, vtl-import-weights).

- Options default to None, meaning "not set": `given` keeps the options that were set, and the command's config
  dataclass supplies every other value, so each default is written once, in the dataclass.
- A wrong option or an unusable input stops with `fail`: one red line `error: ...` on stderr and exit code 2, never a
  traceback.
"""
from __future__ import annotations

USAGE_ERROR = 2
"""Exit code of a wrong option or unusable input (click's own usage errors use 2 as well)."""


def given(**options) -> dict:
    """The options that were set (not None), to pass to a config dataclass as keyword arguments."""
    return {name: value for name, value in options.items() if value is not None}


def fail(message: object, code: int = USAGE_ERROR):
    """Stop the command with a clear one-line message instead of a traceback."""
    import typer

    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)
