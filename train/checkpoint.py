"""Checkpoint folders: save, and read back for a next stage or for inference (VTimeLLM's released weights are
converted into this layout by train.import_weights).

A checkpoint folder (`vtl-train --out DIR`) is self-contained:
- `projector.safetensors` (`weight`, `bias`; `0.*`, `2.*` for `mlp2x_gelu`), the projector the model ran with (trained
  in stage 1, frozen later), its kind in `projector_type`;
- `adapter/` (PEFT format) for the LoRA trained in stage 2 or 3, and `base_adapters/NN/` for the adapters that were
  merged into the LLM before it (stage 3 carries stage 2's), in merge order;
- `llm/` with the LLM + tokenizer when they cannot be named (`tiny-random`), so `--from` continues from exactly it;
- `vtl_checkpoint.json`, written last, saying how to rebuild the model: LLM source, adapter chain, format, projector
  type, producer, and the `feature_spec` of the shards it was trained on (eval, chat and a next stage compare theirs).
The training loop adds `run_config.json`, `metrics.jsonl`, `tensorboard/` and `engine/` beside these.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from torch import nn

from infra.storage import write_json_atomic
from pipeline.contract.provenance import producer
from train.llm_source import CHECKPOINT_JSON, LLM_DIR, read_checkpoint, resolve_llm_path  # torch-free, re-exported
from train.model import MlpProjector, VideoLLM, hidden_size, load_llm, projector_kind

log = logging.getLogger(__name__)

PROJECTOR_FILE = "projector.safetensors"
ADAPTER_DIR = "adapter"
BASE_ADAPTERS_DIR = "base_adapters"


def save_tensors(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Write `state` as safetensors under a temporary name, then rename it into place."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(path)


def _copy_dir(src: Path, dst: Path) -> None:
    if src.resolve() == dst.resolve():
        return
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.replace(dst)


def save_checkpoint(model: VideoLLM, out_dir: str | Path, *, stage: int, config: dict | None = None,
                    projector_state: dict | None = None, adapter_state: dict | None = None,
                    encoder: str | None = None, feature_spec: dict | None = None) -> Path:
    """Write projector, adapters, LLM (when it has no name) and `vtl_checkpoint.json` (last) into `out_dir`.

    `projector_state` / `adapter_state` let a ZeRO-3 caller pass gathered (unpartitioned) weights. `encoder`: the
    encoder id of the training shards (their index.json), which eval and chat compare with theirs; `feature_spec`:
    the training shards' whole spec (pipeline.contract.feature_spec), recorded when given.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prov = model.provenance
    save_tensors(out / PROJECTOR_FILE, projector_state or model.projector.state_dict())
    adapters = []
    for i, src in enumerate(prov.get("base_adapters", [])):
        rel = f"{BASE_ADAPTERS_DIR}/{i:02d}"
        _copy_dir(Path(src), out / rel)
        adapters.append(rel)
    if hasattr(model.llm, "peft_config"):
        model.llm.save_pretrained(str(out / ADAPTER_DIR), state_dict=adapter_state)
        adapters.append(ADAPTER_DIR)
    saved = None
    if prov.get("llm_dir"):
        _copy_dir(Path(prov["llm_dir"]), out / LLM_DIR)
        saved = LLM_DIR
    meta = {"stage": stage, "llm": {"source": prov.get("llm_source"), "saved": saved},
            "conv_format": model.conv_format, "feature_dim": model.feature_dim, "projector": PROJECTOR_FILE,
            "projector_type": projector_kind(model.projector),
            "adapters": adapters, "encoder": encoder, "producer": producer(), "config": config or {}}
    if feature_spec is not None:
        meta["feature_spec"] = feature_spec
    write_json_atomic(out / CHECKPOINT_JSON, meta)
    return out


def check_encoder(meta: dict, encoder: str | None, where: str) -> None:
    """Refuse features from another encoder than the checkpoint was trained on (both ids known and different)."""
    trained = meta.get("encoder")
    if trained and encoder and trained != encoder:
        raise ValueError(f"the checkpoint was trained on features of encoder {trained!r}, but {where} come from "
                         f"{encoder!r}: extract them with the training shards' encoder settings (e.g. the same "
                         "--fast-resize choice)")


def check_spec(meta: dict, index: dict, where: str, time: bool | None = None) -> None:
    """Refuse features (and the time format: by default after stage 1, whose captions hold no times) other than the
    checkpoint was trained on, in one line naming both specs. `index` is the other side's index.json (older ones: the
    spec their fields imply)."""
    from pipeline.contract.feature_spec import check, from_checkpoint, from_index

    check(from_checkpoint(meta), from_index(index), f"the checkpoint was trained on {{expected}}, but {where} are "
          "{found}", time=meta.get("stage", 1) >= 2 if time is None else time)


MLP_KEYS = {"0.weight", "0.bias", "2.weight", "2.bias"}
"""A `mlp2x_gelu` projector's state (LLaVA-1.5's `mm_projector.0/2.*`)."""


def load_projector_file(path: str | Path) -> dict[str, torch.Tensor]:
    """`weight`/`bias` (or the MLP's `0.*`/`2.*`) from our `projector.safetensors` or VTimeLLM's / LLaVA's
    `mm_projector.bin` (keys `...mm_projector.X`)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.split("mm_projector.")[-1]: v for k, v in raw.items() if "mm_projector." in k}
        if not state:
            raise ValueError(f"{path}: no 'mm_projector.' keys (found {sorted(raw)[:5]}); not a VTimeLLM projector")
    if set(state) not in ({"weight", "bias"}, MLP_KEYS):
        raise ValueError(f"{path}: a projector needs exactly 'weight' and 'bias' (linear) or {sorted(MLP_KEYS)} "
                         f"(mlp2x_gelu), found {sorted(state)}")
    return state


def projector_from_state(state: dict[str, torch.Tensor], hidden: int, kind: str | None = None) -> nn.Module:
    """The projector a state holds (linear or mlp2x_gelu, told by its keys); `kind`, when recorded, must agree."""
    found = "mlp2x_gelu" if set(state) == MLP_KEYS else "linear"
    if kind is not None and kind != found:
        raise ValueError(f"the checkpoint records a {kind} projector but its weights are a {found} one")
    out_dim, in_dim = state["2.weight" if found == "mlp2x_gelu" else "weight"].shape[0], \
        state["0.weight" if found == "mlp2x_gelu" else "weight"].shape[1]
    if out_dim != hidden:
        raise ValueError(f"projector maps to {out_dim} but the LLM hidden size is {hidden}: wrong LLM for it?")
    proj = MlpProjector(in_dim, out_dim) if found == "mlp2x_gelu" else nn.Linear(in_dim, out_dim, bias=True)
    proj.load_state_dict({k: v.float() for k, v in state.items()})
    return proj


def merge_adapters(llm: nn.Module, adapter_dirs: list[Path]) -> nn.Module:
    """Load each PEFT adapter in order and merge it into the weights (reference §5.2, stage 3 / inference).

    A ZeRO-3-partitioned LLM (train.zero3.partitioned_build) holds no weights on a rank, only its slice, so peft's
    in-place merge would add to empty tensors; there train.zero3.merge_gathered merges one gathered layer at a time,
    bit for bit the same as the unpartitioned merge.
    """
    from peft import PeftModel

    from train.zero3 import merge_gathered, partitioned

    for path in adapter_dirs:
        wrapped = PeftModel.from_pretrained(llm, str(path), is_trainable=False)
        llm = merge_gathered(wrapped) if partitioned(llm) else wrapped.merge_and_unload()
    return llm


def adapter_chain(meta: dict, checkpoint_dir: str | Path) -> list[Path]:
    """The checkpoint's LoRA folders in merge order (`base_adapters/NN`, then its own `adapter`)."""
    return [Path(checkpoint_dir) / rel for rel in meta["adapters"]]


def load_unmerged(checkpoint_dir: str | Path, llm: str | None = None, dtype: torch.dtype | None = None,
                  attn: str = "auto"):
    """(base LLM with no adapter merged yet, tokenizer, projector, meta, LLM path); `merge_adapters` comes next."""
    ckpt = Path(checkpoint_dir)
    meta = read_checkpoint(ckpt)
    llm_path = resolve_llm_path(meta, ckpt, llm)
    model, tokenizer = load_llm(llm_path, dtype=dtype, attn=attn)
    projector = projector_from_state(load_projector_file(ckpt / meta["projector"]), hidden_size(model),
                                     meta.get("projector_type"))
    return model, tokenizer, projector, meta, llm_path


def load_chain(checkpoint_dir: str | Path, llm: str | None = None, dtype: torch.dtype | None = None,
               attn: str = "auto"):
    """(LLM with the checkpoint's whole adapter chain merged, tokenizer, projector, meta, LLM path)."""
    model, tokenizer, projector, meta, llm_path = load_unmerged(checkpoint_dir, llm=llm, dtype=dtype, attn=attn)
    model = merge_adapters(model, adapter_chain(meta, checkpoint_dir))
    return model, tokenizer, projector, meta, llm_path


def load_for_inference(checkpoint_dir: str | Path, llm: str | None = None, device: str = "cpu",
                       dtype: torch.dtype | None = None) -> VideoLLM:
    """A VideoLLM ready for generation: LoRA chain merged, projector loaded, eval mode, on `device` in `dtype`."""
    model, tokenizer, projector, meta, llm_path = load_chain(checkpoint_dir, llm=llm, dtype=dtype)
    video_llm = VideoLLM(model, tokenizer, projector, conv_format=meta["conv_format"])
    video_llm.provenance = {"llm_source": meta["llm"]["source"], "checkpoint": str(checkpoint_dir)}
    return video_llm.to(device=device, dtype=dtype).eval()
