"""`vtl-import-weights`: VTimeLLM's released weights (stage-1 `mm_projector.bin`, stage-2/3 LoRA folders) → a vtl
checkpoint folder, which `vtl-train --from` continues from and `vtl-eval --checkpoint` / `vtl-chat` evaluate.

    vtl-import-weights --llm lmsys/vicuna-7b-v1.5 --mm-projector vtimellm-stage1/mm_projector.bin \\
        --adapter vtimellm-stage2 --adapter vtimellm-stage3 --out ckpt/vtimellm-stage3

The same command has a second mode, `--convert-chatglm3 SRC --out DST`: a ChatGLM3 folder as released becomes a
reusable transformers GLM folder (train.chatglm), without running the folder's code. The two modes share `--out`;
the import options (`--llm`, `--mm-projector`, `--adapter`, `--conv-format`) are refused in the conversion mode.
VTimeLLM's ChatGLM3 releases import with the first mode (`--llm` the released or the converted folder): their
ChatGLM-named LoRA weights are renamed to GLM's on the way (train.import_weights).
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

    out: Path
    """Checkpoint folder to write (or, with --convert-chatglm3, the converted model folder)."""
    llm: str | None = None
    """The base LLM the release was trained on (hub name or local folder); required unless --convert-chatglm3."""
    mm_projector: Path | None = None
    """Stage-1 `mm_projector.bin` (keys `*mm_projector.*`); without it, the adapters' non_lora_trainables.bin."""
    adapters: tuple[Path, ...] = ()
    """Released LoRA folders (adapter_config.json + adapter_model.bin|safetensors), in merge order; ChatGLM3 ones are
    renamed to the converted model's modules."""
    conv_format: str | None = None
    """Conversation format; default: plain for a projector alone, v1 with adapters (chatglm3 for ChatGLM adapters)."""
    convert_chatglm3: Path | None = None
    """Instead of importing: convert this ChatGLM3 folder as released (model_type chatglm) into a transformers GLM
    folder + fast tokenizer at --out, which --llm then takes; its code files are never run."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapters", tuple(Path(a) for a in self.adapters))
        if self.convert_chatglm3 is not None:
            given = [name for name in ("llm", "mm_projector", "adapters", "conv_format") if getattr(self, name)]
            if given:
                raise ValueError(f"--convert-chatglm3 converts a model folder only; drop {', '.join(given)}")
            if not Path(self.convert_chatglm3, "config.json").is_file():
                raise ValueError(f"{self.convert_chatglm3} not found or has no config.json")
            return
        if not self.llm:
            raise ValueError("--llm is required (the base LLM of the release), unless --convert-chatglm3")
        if self.mm_projector is None and not self.adapters:
            raise ValueError("nothing to import: pass --mm-projector (stage 1) and/or --adapter (stages 2-3)")
        for path in (self.mm_projector, *self.adapters):
            if path is not None and not Path(path).exists():
                raise ValueError(f"{path} not found")


@app.command(cls=strict_command_class())
@options(ImportWeightsConfig, flags={"adapters": flag("--adapter")})
def import_weights(given: dict) -> None:
    """Turn VTimeLLM's released weights into a vtl checkpoint (stage 1 + number of adapters), or convert a ChatGLM3
    folder to transformers' GLM (--convert-chatglm3)."""
    try:
        cfg = ImportWeightsConfig(**given)
    except ValueError as exc:
        fail(exc)
    if cfg.convert_chatglm3 is not None:
        from train.chatglm import convert_chatglm3, is_chatglm3

        if not is_chatglm3(str(cfg.convert_chatglm3)):
            fail(f"{cfg.convert_chatglm3}: config.json does not say model_type 'chatglm'; nothing to convert")
        try:
            dst = convert_chatglm3(str(cfg.convert_chatglm3), str(cfg.out))
        except (ValueError, FileNotFoundError) as exc:
            fail(exc)
        typer.echo(f"wrote a transformers GLM folder to {dst} (use it as --llm)")
        return
    from train.checkpoint import read_checkpoint
    from train.import_weights import import_vtimellm

    try:
        ckpt = import_vtimellm(cfg.out, llm=cfg.llm, mm_projector=cfg.mm_projector, adapters=list(cfg.adapters),
                               conv_format=cfg.conv_format)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        fail(exc)
    typer.echo(f"wrote a stage-{read_checkpoint(ckpt)['stage']} checkpoint to {ckpt}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
