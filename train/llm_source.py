"""Which LLM a command loads, and whether it can be had, without importing torch: the checkpoint record
(`vtl_checkpoint.json`), the LLM a checkpoint continues from, and the hub check of infra.hub.

vtl-train (train.preflight), vtl-eval and vtl-chat ask here first, so a hub name that no hub can give is one
`error:` line within seconds (before torch, transformers or a video are touched), not a minute of huggingface_hub
retries; `train.model.load_llm` asks again for any caller that did not. train.checkpoint re-exports the record's
names.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from infra.hub import TINY_RANDOM, HubUnavailable, model_source
from train.errors import RefusedValue

log = logging.getLogger(__name__)

CHECKPOINT_JSON = "vtl_checkpoint.json"
LLM_DIR = "llm"


def read_checkpoint(checkpoint_dir: str | Path) -> dict:
    """The checkpoint's `vtl_checkpoint.json`, with a clear error when the folder is not a finished checkpoint."""
    path = Path(checkpoint_dir) / CHECKPOINT_JSON
    if not path.is_file():
        if (Path(checkpoint_dir) / "engine" / "latest").is_file():
            advice = "it is an interrupted run with an engine save: finish it with vtl-train --resume"
        elif (Path(checkpoint_dir) / "run_config.json").is_file():
            advice = "it is a run that stopped before its first save: run its vtl-train command again"
        else:
            advice = "not a vtl-train output folder"
        raise FileNotFoundError(f"{checkpoint_dir} is not a finished vtl checkpoint (no {CHECKPOINT_JSON}; {advice})")
    meta = json.loads(path.read_text())
    missing = [k for k in ("stage", "llm", "conv_format", "projector", "adapters") if k not in meta]
    if missing:
        raise ValueError(f"{path}: missing fields {missing}")
    return meta


def resolve_llm_path(meta: dict, checkpoint_dir: Path, llm: str | None) -> str:
    """Which LLM a checkpoint continues from: its saved `llm/` if any, else `llm` (a local copy), else the source."""
    saved = meta["llm"].get("saved")
    if saved:
        if llm not in (None, TINY_RANDOM, meta["llm"]["source"]):
            log.warning("checkpoint %s carries its own LLM in %s/; ignoring --llm %s", checkpoint_dir, saved, llm)
        return str(checkpoint_dir / saved)
    if llm == TINY_RANDOM or (llm is None and meta["llm"]["source"] == TINY_RANDOM):
        raise ValueError(f"checkpoint {checkpoint_dir} was not trained on a saved tiny-random LLM; pass --llm PATH")
    return llm or meta["llm"]["source"]


def require_loadable(name_or_path: str, option: str = "--llm") -> None:
    """A hub name reaches transformers only when the hub or its cache can give it (infra.hub): one RefusedValue line
    naming `option` within seconds. `tiny-random` is built by vtl-train stage 1 (train.tiny), never loaded."""
    if name_or_path == TINY_RANDOM:
        raise RefusedValue(f"{option} {TINY_RANDOM} is built by vtl-train stage 1 and saved in its checkpoint's llm/; "
                           "load that checkpoint (or its llm/ folder) instead")
    try:
        model_source(str(name_or_path), option)
    except HubUnavailable as err:
        raise RefusedValue(str(err)) from None


def check_checkpoint_llm(checkpoint_dir: str | Path, llm: str | None) -> None:
    """vtl-eval / vtl-chat, before anything heavy: the LLM `checkpoint_dir` loads (its own `llm/`, `--llm`, or the
    source it names) can be had. A checkpoint that cannot be read is left to the loader's own error."""
    try:
        meta = read_checkpoint(checkpoint_dir)
        name = resolve_llm_path(meta, Path(checkpoint_dir), llm)
    except (OSError, ValueError, KeyError, TypeError):
        return
    require_loadable(name)
