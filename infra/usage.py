"""How every vtl command line reads its options and reports a wrong one (vtl-pipeline, vtl-eval, vtl-chat,
vtl-train, vtl-import-weights).

- Options default to None, meaning "not set": `given` keeps the options that were set (the one place that says so,
  used by infra.options and train.config), and the command's config dataclass supplies every other value, so each
  default is written once, in the dataclass.
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

    if isinstance(message, OSError) and message.strerror:  # `[Errno 28] No space left on device: 'x'` → one line
        message = f"{message.filename}: {message.strerror}" if message.filename else message.strerror
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def repeated_option(params, args: list[str]) -> str | None:
    """The first option of `args` given twice although it takes one value (click would silently keep the last)."""
    single = {}
    for p in params:  # duck-typed: typer ≥ 0.17 vendors its own click, whose Option is not `click.Option`
        if getattr(p, "param_type_name", None) == "option" and not p.multiple and not getattr(p, "count", False):
            single.update({opt: p.name for opt in (*p.opts, *p.secondary_opts)})
    seen: set[str] = set()
    for arg in args:
        if arg == "--":
            break
        name = single.get(arg.split("=", 1)[0])
        if name is not None:
            if name in seen:
                return arg.split("=", 1)[0]
            seen.add(name)
    return None


def strict_command_class():
    """A typer command class that refuses an option given twice (`--features a --features b`) with exit code 2."""
    from typer.core import TyperCommand

    class StrictCommand(TyperCommand):
        def parse_args(self, ctx, args):
            if (opt := repeated_option(self.params, args)) is not None:
                fail(f"{opt} given more than once (it takes one value)")
            return super().parse_args(ctx, args)

    return StrictCommand
