"""`vtl-import-weights`: VTimeLLM's released weights (stage-1 `mm_projector.bin`, stage-2/3 LoRA folders) → a vtl
checkpoint folder, which `vtl-train --from` continues from and `vtl-eval --checkpoint` / `vtl-chat` evaluate.

    vtl-import-weights --llm lmsys/vicuna-7b-v1.5 --mm-projector vtimellm-stage1/mm_projector.bin \\
        --adapter vtimellm-stage2 --adapter vtimellm-stage3 --out ckpt/vtimellm-stage3
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def import_weights(
    llm: str = typer.Option(..., "--llm", help="The base LLM the release was trained on (hub name or local folder)."),
    mm_projector: Path = typer.Option(..., "--mm-projector", help="Stage-1 mm_projector.bin (keys *mm_projector.*)."),
    adapter: Optional[list[Path]] = typer.Option(None, "--adapter", help="A released LoRA folder (adapter_config.json "
                                                 "+ adapter_model.bin|safetensors), repeatable, in merge order."),
    out: Path = typer.Option(..., "--out", help="Checkpoint folder to write."),
    conv_format: Optional[str] = typer.Option(None, "--conv-format", help="Default: plain for a projector alone, "
                                              "v1 with adapters."),
) -> None:
    """Turn VTimeLLM's released weights into a vtl checkpoint (stage 1 + number of adapters)."""
    adapters = list(adapter or [])
    for path in [mm_projector, *adapters]:
        if not path.exists():
            typer.secho(f"error: {path} not found", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
    from train.checkpoint import read_checkpoint
    from train.import_weights import import_vtimellm

    try:
        ckpt = import_vtimellm(out, llm=llm, mm_projector=mm_projector, adapters=adapters, conv_format=conv_format)
    except (ValueError, KeyError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    typer.echo(f"wrote a stage-{read_checkpoint(ckpt)['stage']} checkpoint to {ckpt}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
