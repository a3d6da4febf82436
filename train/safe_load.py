"""Engine checkpoints read back without unpickling code (`--resume`).

DeepSpeed 0.19 reads `out/engine/<tag>/*_model_states.pt` and `*_optim_states.pt` through its checkpoint engine,
whose `TorchCheckpointEngine.load` calls `torch.load(weights_only=False)`: a planted file runs whatever its pickle
says. `guard_loads(engine)` replaces that engine's `load` with `torch.load(weights_only=True)`, which rebuilds only
tensors, containers, numbers and strings, plus the few DeepSpeed classes its own states hold (listed below, found
with `torch.serialization.get_unsafe_globals_in_checkpoint` on ZeRO 0-3 checkpoints). Anything else refuses the
resume with `UnsafeEngineState`, naming the file and the foreign globals, before any of it is run.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from train.errors import RefusedValue


class UnsafeEngineState(RefusedValue):
    """An engine checkpoint file holds more than weights and DeepSpeed's state."""


def deepspeed_state_classes() -> list:
    """The DeepSpeed types a ZeRO checkpoint pickles (besides tensors and plain containers)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_load(path: str | Path, map_location=None):
    """`torch.load` of one engine file with weights_only=True and DeepSpeed's state classes allowed."""
    try:
        with torch.serialization.safe_globals(deepspeed_state_classes()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError) as err:
        raise UnsafeEngineState(f"--resume: refused to load {path}: it is not a plain weights/optimizer file "
                                f"({_reason(err)}); nothing in it was run. Delete that engine folder and resume from "
                                "an earlier save, or start a new --out") from None


def _reason(err: Exception) -> str:
    """The line of torch's weights-only message that names the refused global, else its first line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "global" in line.lower()]
    return (named or lines or [type(err).__name__])[0].rstrip(".")


def guard_loads(ds_engine) -> None:
    """Make a `deepspeed.DeepSpeedEngine` read its checkpoint files with `safe_load` only."""
    checkpoint_engine = ds_engine.checkpoint_engine

    def load(path, map_location=None):
        return safe_load(path, map_location=map_location)

    checkpoint_engine.load = load
