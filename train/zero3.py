"""ZeRO-3 specifics in one place: building the LLM partitioned, telling and measuring a partitioned module, merging a
LoRA into partitioned weights, and undoing DeepSpeed's process-wide `linear` swap when a run ends.

Under ZeRO-3 the model is built partitioned (`partitioned_build`): transformers' `from_pretrained` constructs it inside
`deepspeed.zero.Init` while an `HfDeepSpeedConfig` is alive, so no rank ever holds the whole LLM in host memory.
Everything here is a no-op (or answers "not partitioned") for ZeRO 0-2 and the torch engine.
"""
from __future__ import annotations

import contextlib
import logging
import os

import torch
from torch import nn

from train.config import TrainConfig
from train.engine import deepspeed_config

log = logging.getLogger(__name__)


@contextlib.contextmanager
def partitioned_build(cfg: TrainConfig, precision: str):
    """Inside this block a DeepSpeed ZeRO-3 run builds its LLM partitioned over the ranks; elsewhere it does nothing.

    transformers' `from_pretrained` enters `deepspeed.zero.Init` (with this run's DeepSpeed config) while an
    `HfDeepSpeedConfig` is alive (transformers holds only a weak reference: this block holds the object), so each
    rank keeps 1/world of every weight from the start; rank 0 reads the checkpoint and scatters it layer by layer.
    `building_partitioned()` is true inside; `partitioned(module)` tells a module built this way.
    """
    if cfg.engine != "deepspeed" or cfg.zero != 3:
        yield None
        return
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    hf_config = HfDeepSpeedConfig(deepspeed_config(cfg, precision))
    try:
        yield hf_config
    finally:  # the flag is process-wide: an in-process caller's next model (eval, another run) must load whole
        unset_hf_deepspeed_config()


def building_partitioned() -> bool:
    """Whether `from_pretrained` builds partitioned right now (inside `partitioned_build`; transformers' own flag)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def launcher_rank() -> int:
    """This process's rank as the launcher set it (`RANK`), readable before any process group exists; 0 for `python`."""
    return int(os.environ.get("RANK", "0"))


def restore_linear() -> None:
    """Undo ZeRO-3's process-wide swap of `torch.nn.functional.linear` (DeepSpeed: "persists unless manually reset").

    Its memory-efficient linear is for training under ZeRO-3; once a run is over, an in-process caller (evaluation,
    another run, tests) gets PyTorch's own again.
    """
    try:
        from deepspeed.runtime.zero.partition_parameters import InsertPostInitMethodToModuleSubClasses as patcher
    except ImportError:
        return
    original = getattr(patcher, "linear_bk", None)
    if original is not None:
        torch.nn.functional.linear = original


def partitioned(module: nn.Module) -> bool:
    """Whether `module` holds ZeRO-3-partitioned parameters (built under `deepspeed.zero.Init`)."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


def local_share(module: nn.Module) -> tuple[int, int]:
    """(elements this rank holds, elements in all) over `module`'s parameters; equal when nothing is partitioned."""
    local = sum(p.ds_tensor.numel() if hasattr(p, "ds_id") else p.numel() for p in module.parameters())
    return local, sum(p.ds_numel if hasattr(p, "ds_id") else p.numel() for p in module.parameters())


def log_share(llm: nn.Module, rank: int) -> None:
    """Say how much of a partitioned LLM this rank holds (nothing to say when it is whole)."""
    if partitioned(llm):
        log.info("LLM built partitioned (ZeRO-3): rank %d holds %d of %d LLM parameters", rank, *local_share(llm))


def merge_gathered(wrapped) -> nn.Module:
    """peft's merge_and_unload on a partitioned LLM, one gathered LoRA layer at a time.

    Each LoRA layer's base weight is gathered in turn (`GatheredParameters`, modifier_rank=0), peft's own `merge()`
    runs on the whole weight, and rank 0's result is scattered back into the slices on leaving the block. One layer
    is whole at a time, so no rank ever holds the whole LLM, and the arithmetic is peft's, so the merged weights equal
    the unpartitioned merge bit for bit. (Loading and merging on CPU before partitioning would also be exact, but
    would cost the full copy per rank that partitioning is there to avoid.) The LoRA weights themselves are small
    and are never partitioned here.
    """
    import deepspeed
    from peft.tuners.tuners_utils import BaseTunerLayer

    for layer in [m for m in wrapped.modules() if isinstance(m, BaseTunerLayer)]:
        with deepspeed.zero.GatheredParameters(list(layer.get_base_layer().parameters()), modifier_rank=0):
            layer.merge()
    return wrapped.unload()  # the base layers now hold the merged weights; drop the LoRA wrappers
