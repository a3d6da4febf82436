"""Conversion of VTimeLLM's released weights (stage-1 `mm_projector.bin`, stage-2/3 LoRA folders) into a vtl
checkpoint folder (train.checkpoint's layout), which `vtl-train --from` continues from and `vtl-eval` evaluates.

The release's LoRA keys already match PEFT's, so adapters are copied as PEFT folders with safetensors weights; a
projector may also come from the `non_lora_trainables.bin` VTimeLLM stores beside each LoRA. A LoRA of VTimeLLM's
ChatGLM3 release names ChatGLM's modules (`query_key_value`, `dense`, `dense_h_to_4h`, `dense_4h_to_h`,
`output_layer`); it is renamed to the converted GLM model's (train.chatglm.glm_adapter), which `--llm` (a ChatGLM3
folder, converted on load, or its conversion) provides, and the checkpoint's format defaults to `chatglm3`. `vtl-import-weights`
(train/import_cli.py) is the command for it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from infra.storage import write_json_atomic
from pipeline.contract.provenance import producer
from train.chatglm import glm_adapter, is_chatglm_adapter, llm_glm_config
from train.checkpoint import (
    BASE_ADAPTERS_DIR,
    CHECKPOINT_JSON,
    PROJECTOR_FILE,
    load_projector_file,
    save_tensors,
)


def _vtimellm_adapter(src: Path, dst: Path, llm: str) -> bool:
    """Copy a VTimeLLM LoRA folder as a PEFT folder with safetensors weights (its keys already match PEFT's, or are
    ChatGLM's and get renamed for `llm`'s GLM conversion); True for a ChatGLM one."""
    cfg = json.loads((src / "adapter_config.json").read_text())
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{src}: expected a LoRA adapter, got peft_type {cfg.get('peft_type')!r}")
    if (src / "adapter_model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(src / "adapter_model.safetensors"))
    elif (src / "adapter_model.bin").is_file():
        state = torch.load(src / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{src}: no adapter_model.safetensors or adapter_model.bin")
    bad = [k for k in state if "lora_" not in k]
    if bad:
        raise ValueError(f"{src}: adapter holds non-LoRA weights {bad[:3]}; not supported")
    chatglm = is_chatglm_adapter(cfg, state)
    if chatglm:
        cfg, state = glm_adapter(cfg, state, llm_glm_config(llm))
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_json_atomic(tmp / "adapter_config.json", cfg)
    save_tensors(tmp / "adapter_model.safetensors", state)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.replace(dst)
    return chatglm


def _non_lora_projector(adapter_dirs: list[Path]) -> dict | None:
    """VTimeLLM stores `non_lora_trainables.bin` beside each LoRA; only projector weights are accepted there."""
    found = None
    for src in adapter_dirs:
        path = src / "non_lora_trainables.bin"
        if path.is_file():
            raw = torch.load(path, map_location="cpu", weights_only=True)
            other = [k for k in raw if "mm_projector." not in k]
            if other:
                raise ValueError(f"{path}: holds non-projector weights {other[:3]}; not supported")
            if raw:
                found = load_projector_file(path)
    return found


def import_vtimellm(out_dir: str | Path, *, llm: str, mm_projector: str | Path | None,
                    adapters: list[str | Path] = (), conv_format: str | None = None) -> Path:
    """Turn VTimeLLM's released weights into a vtl checkpoint folder (start of a stage, or for eval).

    `mm_projector` is the stage-1 `mm_projector.bin`; `adapters` are the stage-2 (and stage-3) LoRA folders in merge
    order. The result is a stage-(1 + len(adapters)) checkpoint whose LLM is `llm` (recorded by name or path).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    adapter_dirs = [Path(a) for a in adapters]
    state = load_projector_file(mm_projector) if mm_projector else _non_lora_projector(adapter_dirs)
    if state is None:
        raise ValueError("no projector given: pass mm_projector.bin (stage 1 release)")
    save_tensors(out / PROJECTOR_FILE, state)
    rels, chatglm = [], False
    for i, src in enumerate(adapter_dirs):
        rels.append(f"{BASE_ADAPTERS_DIR}/{i:02d}")
        chatglm = _vtimellm_adapter(src, out / rels[-1], llm) or chatglm
    stage = 1 + len(rels)
    meta = {"stage": stage, "llm": {"source": llm, "saved": None},
            "conv_format": conv_format or ("plain" if stage == 1 else "chatglm3" if chatglm else "v1"),
            "feature_dim": int(state["weight"].shape[1]), "projector": PROJECTOR_FILE, "adapters": rels,
            "producer": producer(),
            "config": {"imported_from": {"mm_projector": str(mm_projector) if mm_projector else None,
                                         "adapters": [str(a) for a in adapter_dirs]}}}
    write_json_atomic(out / CHECKPOINT_JSON, meta)
    return out
