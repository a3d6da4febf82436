"""The engine seam: what the training loop needs from DeepSpeed (or plain PyTorch), and nothing more.

`forward(batch) → loss`, `backward(loss)`, `step() → stepped?` (the optimizer steps every `accumulation` micro-batches),
`lr`, `save(dir, tag)` / `load(dir) → tag`, `export_trainables() → (projector state, adapter state or None)` (whole
weights, gathered under ZeRO-3, for the final checkpoint).

`DeepSpeedEngine` is the real path: `deepspeed.initialize` with a config built from TrainConfig (ZeRO stage, bf16 on
GPU / fp32 on CPU, micro-batch and accumulation, gradient clipping, AdamW with `torch_adam: true` so no optimizer op
has to be compiled). It runs on CPU too, over gloo. `TorchEngine` is a single-process plain-PyTorch version of the
same contract (same optimizer, same schedule, same loss scaling) for debugging without DeepSpeed.

The learning-rate schedule is `warmup_cosine` for both: linear warm-up from 0, then cosine decay to 0 (the HF
Trainer's "cosine" schedule VTimeLLM trained with), passed to DeepSpeed as a client scheduler.

How a ZeRO-3 model is built partitioned, merged and measured is in train.zero3; here ZeRO-3 shows only in the config
and in `export_trainables`, which gathers the partitioned trainables before copying them.
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from train.config import TrainConfig
from train.step_tags import latest_tag, write_latest


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier for optimizer step `step` (0-based) of `total`, `warmup` of them warming up."""
    if step < warmup:
        return step / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(cfg: TrainConfig, total: int) -> int:
    return math.ceil(cfg.warmup_ratio * total)


def resolve_precision(precision: str) -> str:
    """`auto` → bf16 on a CUDA GPU (VTimeLLM's choice), fp32 on CPU (bf16 matmuls on CPU are slow and lossy)."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    if precision == "bf16" and not torch.cuda.is_available():
        return "bf16"  # allowed: DeepSpeed's CPU accelerator supports bf16, just slowly
    return precision


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> tuple[int, int, int]:
    """Join the launcher's process group (torchrun / deepspeed set RANK etc.); a bare `python` run is rank 0 of 1."""
    from train.op_cache import set_extensions_dir

    set_extensions_dir(torch.__version__)  # before DeepSpeed builds an op: one op folder per environment
    import deepspeed
    import torch.distributed as dist

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", str(_free_port())))
    if not dist.is_initialized():
        # The backend comes from DeepSpeed's accelerator: nccl on GPUs, gloo on CPU.
        deepspeed.init_distributed()
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))


class Engine(Protocol):
    module: nn.Module
    device: torch.device
    dtype: torch.dtype

    def forward(self, batch: dict) -> torch.Tensor: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def step(self) -> bool: ...
    @property
    def lr(self) -> float: ...
    def save(self, directory: Path, tag: str) -> None: ...
    def load(self, directory: Path) -> str | None: ...
    def export_trainables(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]: ...


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: the stage preparation froze everything")
    return params


def _scheduler(optimizer, cfg: TrainConfig, total: int):
    warm = warmup_steps(cfg, total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, warm))


def _export(module: nn.Module, gathered: contextlib.AbstractContextManager | None,
            with_adapter: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Copies of the projector state and (with_adapter) the LoRA state, taken inside `gathered` when given."""
    with gathered or contextlib.nullcontext():
        projector = {k: v.detach().clone() for k, v in module.projector.state_dict().items()}
        adapter = ({k: v.detach().clone() for k, v in module.llm.state_dict().items() if "lora_" in k}
                   if with_adapter and hasattr(module.llm, "peft_config") else None)
    return projector, adapter


def deepspeed_config(cfg: TrainConfig, precision: str) -> dict:
    """The DeepSpeed JSON config for this run (also saved in run_config.json)."""
    zero: dict = {"stage": cfg.zero}
    if cfg.zero > 0:
        zero.update(overlap_comm=torch.cuda.is_available(), contiguous_gradients=True)
    if cfg.zero == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=True)
    return {
        "train_batch_size": cfg.global_batch,
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.accumulation,
        "gradient_clipping": cfg.grad_clip,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": False},
        "zero_optimization": zero,
        "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay,
                                                  "betas": [0.9, 0.999], "eps": 1e-8, "torch_adam": True}},
        "steps_per_print": 10 ** 9,
        "wall_clock_breakdown": False,
    }


class DeepSpeedEngine:
    """The loop's view of a `deepspeed.DeepSpeedEngine`."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, total_steps: int):
        import deepspeed

        self.precision = resolve_precision(cfg.precision)
        self.config = deepspeed_config(cfg, self.precision)
        self.zero = cfg.zero
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, model_parameters=_trainable(model), config=self.config,
            lr_scheduler=lambda opt: _scheduler(opt, cfg, total_steps))
        self.module = self.engine.module
        self.device = self.engine.device
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32

    def forward(self, batch: dict) -> torch.Tensor:
        return self.engine(**batch).loss

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)  # scales by 1/accumulation itself

    def step(self) -> bool:
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        return boundary

    @property
    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def save(self, directory: Path, tag: str) -> None:
        # Frozen weights are rebuilt from --llm/--from on resume; saving them would write the whole LLM every time.
        self.engine.save_checkpoint(str(directory), tag=tag, exclude_frozen_parameters=True, save_latest=False)
        if self.engine.global_rank == 0:
            write_latest(Path(directory), tag)

    def load(self, directory: Path) -> str | None:
        from train.safe_load import guard_loads

        tag = latest_tag(directory)
        if tag is None:
            return None
        guard_loads(self.engine)  # DeepSpeed's own load unpickles anything (weights_only=False)
        path, _ = self.engine.load_checkpoint(str(directory), tag=tag, load_module_strict=False)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint in {directory}")
        return tag

    def export_trainables(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """(projector state, LoRA state) as whole copies. Under ZeRO-3 every rank must call it: the projector and LoRA
        weights are gathered (read-only) around the copy, and the LoRA state is returned because peft's own export
        would read the empty local slices; otherwise the adapter is None and peft reads the module itself."""
        if self.zero != 3:
            return _export(self.module, None, with_adapter=False)
        import deepspeed

        lora = [p for n, p in self.module.llm.named_parameters() if "lora_" in n]
        params = [*self.module.projector.parameters(), *lora]
        return _export(self.module, deepspeed.zero.GatheredParameters(params, modifier_rank=None), with_adapter=True)


class TorchEngine:
    """Plain PyTorch, one process: AdamW + the same schedule, clipping and accumulation as the DeepSpeed path."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, total_steps: int):
        self.precision = resolve_precision(cfg.precision)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.module = model.to(self.device, self.dtype)
        self.params = _trainable(model)
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           betas=(0.9, 0.999), eps=1e-8)
        self.scheduler = _scheduler(self.optimizer, cfg, total_steps)
        self.accumulation, self.grad_clip, self.micro = cfg.accumulation, cfg.grad_clip, 0
        self.config = {"engine": "torch", "precision": self.precision}

    def forward(self, batch: dict) -> torch.Tensor:
        return self.module(**batch).loss

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accumulation).backward()

    def step(self) -> bool:
        self.micro += 1
        if self.micro % self.accumulation:
            return False
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _names(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.module.named_parameters() if p.requires_grad}

    def save(self, directory: Path, tag: str) -> None:
        folder = Path(directory) / tag
        folder.mkdir(parents=True, exist_ok=True)
        state = {"params": {n: p.detach().cpu() for n, p in self._names().items()},
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "micro": self.micro}
        torch.save(state, folder / "engine_state.pt")
        write_latest(Path(directory), tag)  # written last: a half-saved tag is never "latest"

    def load(self, directory: Path) -> str | None:
        tag = latest_tag(directory)
        if tag is None:
            return None
        from train.safe_load import safe_load

        state = safe_load(Path(directory) / tag / "engine_state.pt", map_location="cpu")
        with torch.no_grad():
            for name, p in self._names().items():
                p.copy_(state["params"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro = state["micro"]
        return tag

    def export_trainables(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """(projector state, None): one whole model in one process; peft exports the adapter from the module."""
        return _export(self.module, None, with_adapter=False)


def make_engine(model: nn.Module, cfg: TrainConfig, total_steps: int) -> Engine:
    kind = DeepSpeedEngine if cfg.engine == "deepspeed" else TorchEngine
    return kind(model, cfg, total_steps)
