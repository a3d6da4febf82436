"""`vtl-export CHECKPOINT --out DIR`: a checkpoint as a publishable folder (train.export); options generated from
`train.export.ExportConfig`."""
from __future__ import annotations

import typer

from infra.options import flag, options
from infra.usage import fail, strict_command_class
from train.export import ExportConfig

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(cls=strict_command_class())
@options(ExportConfig, flags={"checkpoint": flag(argument=True)})
def export_command(given: dict) -> None:
    """Write CHECKPOINT as a folder loadable with transformers + its vtl_video_llm.py (merged LoRA, projector,
    feature spec, chat format)."""
    try:
        cfg = ExportConfig(**given)
    except ValueError as exc:
        fail(exc)
    from train.export import export

    try:
        out = export(cfg)
    except (ValueError, FileNotFoundError) as exc:
        fail(exc)
    typer.echo(f"exported {cfg.checkpoint} to {out} (load it with {out}/vtl_video_llm.py)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
