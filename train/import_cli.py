"""`vtl-import-weights`: VTimeLLM's released weights (stage-1 `mm_projector.bin`, stage-2/3 LoRA folders) → a vtl
checkpoint folder, which `vtl-train --from` continues from and `vtl-eval --checkpoint` / `vtl-chat` evaluate.

    vtl-import-weights --llm lmsys/vicuna-7b-v1.5 --mm-projector vtimellm-stage1/mm_projector.bin \\
        --adapter vtimellm-stage2 --adapter vtimellm-stage3 --out ckpt/vtimellm-stage3
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from infra.options import flag, options
from infra.usage import fail, strict_command_class

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@dataclass(frozen=True)
class ImportWeightsConfig:
    """Options of `vtl-import-weights`: the CLI's options are generated from these fields."""

    llm: str
    """The base LLM the release was trained on (hub name or local folder)."""
    mm_projector: Path
    """Stage-1 `mm_projector.bin` (keys `*mm_projector.*`)."""
    out: Path
    """Checkpoint folder to write."""
    adapters: tuple[Path, ...] = ()
    """Released LoRA folders (adapter_config.json + adapter_model.bin|safetensors), in merge order."""
    conv_format: str | None = None
    """Conversation format; default: plain for a projector alone, v1 with adapters."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapters", tuple(Path(a) for a in self.adapters))
        for path in (self.mm_projector, *self.adapters):
            if not Path(path).exists():
                raise ValueError(f"{path} not found")


@app.command(cls=strict_command_class())
@options(ImportWeightsConfig, flags={"adapters": flag("--adapter")})
def import_weights(given: dict) -> None:
    """Turn VTimeLLM's released weights into a vtl checkpoint (stage 1 + number of adapters)."""
    try:
        cfg = ImportWeightsConfig(**given)
    except ValueError as exc:
        fail(exc)
    from train.checkpoint import read_checkpoint
    from train.import_weights import import_vtimellm

    try:
        ckpt = import_vtimellm(cfg.out, llm=cfg.llm, mm_projector=cfg.mm_projector, adapters=list(cfg.adapters),
                               conv_format=cfg.conv_format)
    except (ValueError, KeyError) as exc:
        fail(exc)
    typer.echo(f"wrote a stage-{read_checkpoint(ckpt)['stage']} checkpoint to {ckpt}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
