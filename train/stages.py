"""The three training stages: one table of what differs, and three short functions that build the model for each.

Reference §5.1-5.2. The order of operations is part of the recipe, so each `prepare_stageN` spells it out. The
numbers of the recipe (lr, epochs, ZeRO stage, batch sizes, LoRA r/α) live in the presets, `train/presets/*.yaml`.
The functions take a TrainConfig-like object (attributes `stage`, `llm`, `from_checkpoint`, `out`, `shards`,
`conv_format`, `lora_r`, `lora_alpha`, `lora_dropout`, `seed`, `attn`) and return a VideoLLM whose
`requires_grad` flags select exactly the stage's trainable parameters.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.contract.shards import FEATURE_DIM
from train.checkpoint import adapter_chain, load_unmerged, merge_adapters, read_checkpoint
from train.model import VideoLLM, hidden_size, new_projector
from train.tiny import base_llm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One row of the stage table: what the code reads. The numbers (lr, epochs, ZeRO, batch) are the presets'."""

    number: int
    description: str
    trainable: str
    """`projector` or `lora` (select_trainable)."""
    from_stage: int | None
    """The stage whose checkpoint `--from` must be."""
    conv_format: str
    """The format when neither preset nor flag sets one (the presets set it, so this only fills a bare config)."""


STAGES = {
    1: Stage(1, "feature alignment: a new projector on the frozen LLM (image/video captions)", "projector", None,
             "plain"),
    2: Stage(2, "boundary perception: a new LoRA on the stage-1 LLM, projector frozen (templated QA)", "lora", 1, "v1"),
    3: Stage(3, "instruction tuning: stage-2 LoRA merged, a new LoRA, projector frozen (dialogues)", "lora", 2, "v1"),
}


def lora_targets(llm: nn.Module) -> list[str]:
    """Names of every nn.Linear leaf of the LLM but `lm_head` (reference §5.2: found before the projector exists);
    GLM keeps `lm_head`, ChatGLM3's `output_layer`, which VTimeLLM's GLM recipe trains (train.chatglm)."""
    from train.chatglm import keeps_lm_head_lora

    names = {name.split(".")[-1] for name, mod in llm.named_modules() if isinstance(mod, nn.Linear)}
    if not keeps_lm_head_lora(llm):
        names.discard("lm_head")
    if not names:
        raise ValueError(f"{type(llm).__name__} has no nn.Linear layers to put LoRA on (e.g. GPT-2's Conv1D)")
    return sorted(names)


def add_lora(llm: nn.Module, cfg) -> nn.Module:
    """Wrap the LLM with a fresh LoRA (r, α, dropout from cfg; bias none), seeded for reproducible init."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                        target_modules=lora_targets(llm), task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return get_peft_model(llm, config)


def select_trainable(model: VideoLLM, what: str) -> list[str]:
    """Freeze everything, then unfreeze the stage's parameters; returns the trainable parameter names."""
    if what not in ("projector", "lora"):
        raise ValueError(f"unknown trainable set {what!r}")
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("projector.") if what == "projector" else "lora_" in name)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _from_previous(cfg, stage: Stage, dtype: torch.dtype | None):
    """The previous checkpoint's base LLM (no adapter merged yet), tokenizer, projector, provenance, adapter chain."""
    if not cfg.from_checkpoint:
        raise ValueError(f"stage {stage.number} needs --from, the stage-{stage.from_stage} checkpoint")
    ckpt = Path(cfg.from_checkpoint)
    meta = read_checkpoint(ckpt)
    if meta["stage"] != stage.from_stage:
        raise ValueError(f"stage {stage.number} starts from a stage-{stage.from_stage} checkpoint; "
                         f"{ckpt} is stage {meta['stage']}")
    llm, tok, projector, meta, llm_path = load_unmerged(ckpt, llm=cfg.llm, dtype=dtype, attn=cfg.attn)
    chain = adapter_chain(meta, ckpt)
    prov = {"llm_source": meta["llm"]["source"] if meta["llm"]["saved"] else llm_path,
            "llm_dir": str(ckpt / meta["llm"]["saved"]) if meta["llm"]["saved"] else None,
            "base_adapters": [str(path) for path in chain]}
    return llm, tok, projector, prov, chain


def _finish(llm, tok, projector: nn.Linear, prov: dict, stage: Stage, cfg) -> VideoLLM:
    from train.chatglm import default_conv_format

    fmt = cfg.conv_format or default_conv_format(llm, tok, stage.conv_format)
    model = VideoLLM(llm, tok, projector.to(next(llm.parameters()).dtype), fmt)
    model.provenance = prov
    trainable = select_trainable(model, stage.trainable)
    log.info("stage %d: %d trainable tensors (%d parameters)", stage.number, len(trainable),
             sum(p.numel() for p in model.parameters() if p.requires_grad))
    return model


def prepare_stage1(cfg, texts: Iterable[str] | None = None, dtype: torch.dtype | None = None,
                   feature_dim: int = FEATURE_DIM) -> VideoLLM:
    """Stage 1: load (or build) the LLM and freeze it; add a new projector, the only trainable part."""
    llm, tok, prov = base_llm(cfg, texts, dtype)
    projector = new_projector(feature_dim, hidden_size(llm), seed=cfg.seed, kind=getattr(cfg, "projector", "linear"))
    return _finish(llm, tok, projector, prov, STAGES[1], cfg)


def prepare_stage2(cfg, dtype: torch.dtype | None = None) -> VideoLLM:
    """Stage 2: stage-1 LLM -> LoRA on all linear layers but lm_head -> stage-1 projector, frozen."""
    llm, tok, projector, prov, chain = _from_previous(cfg, STAGES[2], dtype)
    if chain:  # stage 1 trains no adapter, and an imported stage-1 release has none (its stage = 1 + adapters)
        raise ValueError(f"{cfg.from_checkpoint} is a stage-1 checkpoint with adapters {chain}: not one vtl writes")
    llm = add_lora(llm, cfg)
    return _finish(llm, tok, projector, prov, STAGES[2], cfg)


def prepare_stage3(cfg, dtype: torch.dtype | None = None) -> VideoLLM:
    """Stage 3: stage-2 LLM -> merge its LoRA chain into the weights (merge_and_unload) -> a fresh LoRA; projector
    frozen (reference §5.2; the paper's Table 2: a new LoRA after merging beats reusing stage 2's)."""
    llm, tok, projector, prov, chain = _from_previous(cfg, STAGES[3], dtype)
    llm = merge_adapters(llm, chain)
    llm = add_lora(llm, cfg)
    return _finish(llm, tok, projector, prov, STAGES[3], cfg)


def prepare_model(cfg, dtype: torch.dtype | None = None, feature_dim: int = FEATURE_DIM) -> VideoLLM:
    """The model for `cfg.stage` (dispatch to prepare_stage1/2/3); `feature_dim` is the shards' (index.json `dim`)."""
    if cfg.stage == 1:
        return prepare_stage1(cfg, dtype=dtype, feature_dim=feature_dim)
    return (prepare_stage2 if cfg.stage == 2 else prepare_stage3)(cfg, dtype=dtype)
