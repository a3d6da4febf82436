"""The engine seam: what the training loop needs from DeepSpeed (or plain PyTorch), and nothing more.

`forward(batch) → loss`, `backward(loss)`, `step() → stepped?` (the optimizer steps every `accumulation` micro-batches),
`lr`, `save(dir, tag)` / `load(dir) → tag`, `gathered(params)` (those parameters whole under ZeRO-3, for exporting).

`DeepSpeedEngine` is the real path: `deepspeed.initialize` with a config built from TrainConfig (ZeRO stage, bf16 on
GPU / fp32 on CPU, micro-batch and accumulation, gradient clipping, AdamW with `torch_adam: true` so no optimizer op
has to be compiled). It runs on CPU too, over gloo. `TorchEngine` is a single-process plain-PyTorch version of the
same contract (same optimizer, same schedule, same loss scaling) for debugging without DeepSpeed.

The learning-rate schedule is `warmup_cosine` for both: linear warm-up from 0, then cosine decay to 0 (the HF
Trainer's "cosine" schedule VTimeLLM trained with), passed to DeepSpeed as a client scheduler.

Under ZeRO-3 the model is built partitioned (`partitioned_build`): transformers' `from_pretrained` constructs it inside
`deepspeed.zero.Init` while an `HfDeepSpeedConfig` is alive, so no rank ever holds the whole LLM in host memory.
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

LATEST = "latest"


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
    def gathered(self, params: list[nn.Parameter]) -> contextlib.AbstractContextManager: ...


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: the stage preparation froze everything")
    return params


def _scheduler(optimizer, cfg: TrainConfig, total: int):
    warm = warmup_steps(cfg, total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, warm))


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


@contextlib.contextmanager
def partitioned_build(cfg: TrainConfig, precision: str):
    """Inside this block a DeepSpeed ZeRO-3 run builds its LLM partitioned over the ranks; elsewhere it does nothing.

    transformers' `from_pretrained` enters `deepspeed.zero.Init` (with this run's DeepSpeed config) while an
    `HfDeepSpeedConfig` is alive (transformers holds only a weak reference: this block holds the object), so each
    rank keeps 1/world of every weight from the start; rank 0 reads the checkpoint and scatters it layer by layer.
    `is_deepspeed_zero3_enabled()` is true inside; `partitioned(module)` tells a module built this way.
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
        self.engine.save_checkpoint(str(directory), tag=tag, exclude_frozen_parameters=True)

    def load(self, directory: Path) -> str | None:
        if not (Path(directory) / LATEST).exists():
            return None
        path, _ = self.engine.load_checkpoint(str(directory), load_module_strict=False)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint in {directory}")
        return (Path(directory) / LATEST).read_text().strip()

    def gathered(self, params: list[nn.Parameter]):
        """`params` whole on every rank inside the block (ZeRO-3; every rank must enter it); read-only."""
        if self.zero != 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


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
        (Path(directory) / LATEST).write_text(tag)  # written last: a half-saved tag is never "latest"

    def load(self, directory: Path) -> str | None:
        latest = Path(directory) / LATEST
        if not latest.exists():
            return None
        tag = latest.read_text().strip()
        state = torch.load(Path(directory) / tag / "engine_state.pt", map_location="cpu", weights_only=True)
        with torch.no_grad():
            for name, p in self._names().items():
                p.copy_(state["params"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro = state["micro"]
        return tag

    def gathered(self, params: list[nn.Parameter]):
        return contextlib.nullcontext()


def make_engine(model: nn.Module, cfg: TrainConfig, total_steps: int) -> Engine:
    kind = DeepSpeedEngine if cfg.engine == "deepspeed" else TorchEngine
    return kind(model, cfg, total_steps)
