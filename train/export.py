"""`vtl-export CHECKPOINT --out DIR`: a trained checkpoint as the folder people publish: the LLM with its LoRA chain
merged (transformers' `save_pretrained`, with its tokenizer), the projector, `vtl_model.json` (chat format, prompt
pieces, stop tokens, the features it was trained on) and `vtl_video_llm.py` (train/hub_module.py), the one module a
user needs beside transformers to load it and ask questions (its docstring shows how).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from infra.storage import write_json_atomic
from train.hub_module import PROJECTOR_FILE, QUESTION, SPEC_FILE

MODULE_FILE = "vtl_video_llm.py"


@dataclass(frozen=True)
class ExportConfig:
    """Options of `vtl-export`: the CLI's options are generated from these fields."""

    checkpoint: Path
    """A finished vtl checkpoint folder (vtl-train --out, or vtl-import-weights)."""
    out: Path
    """Folder to write (must not exist yet, or be empty)."""
    llm: str | None = None
    """The checkpoint's base LLM, when it is not where the checkpoint says (a local copy)."""

    def __post_init__(self) -> None:
        if not (Path(self.checkpoint) / "vtl_checkpoint.json").is_file():
            raise ValueError(f"{self.checkpoint} not found or not a finished vtl checkpoint (no vtl_checkpoint.json)")
        if Path(self.out).exists() and any(Path(self.out).iterdir()):
            raise ValueError(f"{self.out} exists and is not empty; choose a new --out")


def prompt_pieces(tokenizer, fmt: str) -> list[dict]:
    """The single-question generation prompt of `fmt` as pieces: literal ids, or text with `<video>` and QUESTION."""
    from pipeline.contract.conversation import _build, video_turn

    # _build is the conversation module's own segmentation: the pieces are tokenized exactly as vtl-chat's are.
    segs = _build([video_turn(QUESTION)], tokenizer, fmt, for_generation=True)
    return [{"ids": list(s.ids)} if s.ids else {"text": s.text} for s in segs]


def export(cfg: ExportConfig) -> Path:
    """Write the folder (under a temporary name, renamed into place when complete)."""
    from pipeline.contract.conversation import prepends_every_chunk
    from pipeline.contract.provenance import producer
    from pipeline.contract.stops import answer_stop_ids
    from train.checkpoint import load_for_inference, read_checkpoint, save_tensors

    meta = read_checkpoint(cfg.checkpoint)
    model = load_for_inference(cfg.checkpoint, llm=cfg.llm)
    out = Path(cfg.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.llm.save_pretrained(tmp)
    model.tokenizer.save_pretrained(tmp)
    save_tensors(tmp / PROJECTOR_FILE, model.projector.state_dict())
    shutil.copy(Path(__file__).with_name("hub_module.py"), tmp / MODULE_FILE)
    write_json_atomic(tmp / SPEC_FILE, {
        "conv_format": model.conv_format, "prompt": prompt_pieces(model.tokenizer, model.conv_format),
        "strip_leading_space": prepends_every_chunk(model.tokenizer), "stop_ids": answer_stop_ids(model.tokenizer, model.conv_format),
        "features": {"encoder": meta.get("encoder"), "dim": model.feature_dim, "frames": 100,
                     "note": "one row per sampled frame (100 for a video), from the encoder vtl-pipeline extract "
                             "records; timestamps in answers are positions on the 0-99 frame scale"},
        "trained": {"stage": meta["stage"], "llm": meta["llm"]["source"], "checkpoint": str(cfg.checkpoint),
                    "producer": meta.get("producer")},
        "producer": producer()})
    if out.exists():
        out.rmdir()  # checked empty by the config
    tmp.replace(out)
    return out
