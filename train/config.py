"""`TrainConfig`: every option of `vtl-train`, resolved as dataclass defaults ← stage preset YAML ← command-line flags.

The stage presets (`train/presets/stage{1,2,3}.yaml`) carry VTimeLLM's recipe (reference §5.1); their keys are field
names of `TrainConfig`, so a preset and a flag can set exactly the same things. The presets are where the recipe's
numbers live: `vtl-train` always loads one, so a field's dataclass default below applies only to a key no preset
sets, or to a TrainConfig built directly (tests); to change stage 2's learning rate, edit `presets/stage2.yaml`.
The global batch is a property of the
recipe (128), not of the hardware: gradient accumulation is derived as global / (micro × world) and a run whose world
size does not divide it stops with an error (VTimeLLM users who changed the GPU count silently halved the batch,
its issue #26).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from train.report import REPORTERS

PRESET_DIR = Path(__file__).parent / "presets"
PRECISIONS = ("auto", "bf16", "fp32")
ENGINES = ("deepspeed", "torch")
ATTENTIONS = ("auto", "sdpa", "eager", "flash_attention_2")
PROJECTORS = ("linear", "mlp2x_gelu")
"""train.model.PROJECTORS, repeated here so the config (and `vtl-train --help`) imports no torch."""


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class TrainConfig:
    """One `vtl-train` run. The CLI's options are generated from these fields (`--micro-batch` ↔ `micro_batch`).

    Fields marked "preset" are set by every shipped stage preset, so their defaults here are only fallbacks.
    """

    stage: int
    """Training stage: 1 (projector), 2 (LoRA, projector frozen), 3 (merge stage-2 LoRA, fresh LoRA)."""
    shards: str
    """Folder of training shards (WebDataset tars + index.json, written by build-qa or import-vtimellm)."""
    llm: str
    """Base LLM: a local Hugging Face folder, a hub name, or `tiny-random` (small LLaMA + tokenizer built here)."""
    out: str
    """Output checkpoint folder (projector, adapters, engine state, metrics.jsonl, tensorboard/, run_config.json)."""
    from_checkpoint: str | None = None
    """Previous stage's checkpoint folder (`--from`): stage 2 needs stage 1's, stage 3 needs stage 2's."""
    preset: str | None = None
    """Preset YAML (path or name in train/presets/); default: `stage{stage}.yaml`. Flags override it."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (default: epochs × steps per epoch from index.json)."""
    resume: bool = False
    """Continue a killed run from the last engine checkpoint in `out/engine/` (model, optimizer, loader position)."""
    micro_batch: int = 8
    """Samples per forward pass per process (preset)."""
    global_batch: int = 128
    """Samples per optimizer step over all processes (preset); kept whatever the world size (accumulation derived)."""
    lr: float = 1e-4
    """Peak learning rate (AdamW, linear warm-up then cosine decay to 0) (preset)."""
    epochs: float = 1.0
    """Passes over the training shards (fractions allowed); the step count comes from index.json (preset)."""
    warmup_ratio: float = 0.03
    """Share of the optimizer steps spent warming the learning rate up from 0 (preset)."""
    weight_decay: float = 0.0
    """AdamW weight decay (preset; VTimeLLM: 0)."""
    grad_clip: float = 0.0
    """Gradient norm clipping threshold; 0 = off, VTimeLLM's setting (its DeepSpeed JSONs set no `gradient_clipping`
    and its trainer fills only "auto" keys, so DeepSpeed's default 0 applies). `--grad-clip 1.0` turns it on."""
    zero: int = 2
    """DeepSpeed ZeRO stage 0-3 (preset; VTimeLLM: 3 for stages 1-2, 2 for stage 3)."""
    precision: str = "auto"
    """`auto` (bf16 on GPU, fp32 on CPU), `bf16` or `fp32` (preset)."""
    engine: str = "deepspeed"
    """`deepspeed` (the real path) or `torch` (plain PyTorch, one process, for debugging)."""
    attn: str = "auto"
    """Attention kernel: `auto` (flash_attention_2 if installed and the GPU supports it, else sdpa), or one by name."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (saves memory) (preset; VTimeLLM: on)."""
    conv_format: str | None = None
    """Conversation format (`plain`, `v1`, `chatglm3`, `chat_template`) (preset); unset: the stage table's."""
    max_tokens: int = 2048
    """Longest sequence (text tokens + feature rows); longer samples are skipped and counted, never cut (preset)."""
    projector: str = "linear"
    """Stage 1's new projector: `linear` (VTimeLLM) or `mlp2x_gelu` (LLaVA-1.5: Linear, GELU, Linear); recorded in
    the checkpoint, and later stages, eval and chat build the recorded one."""
    lora_r: int = 64
    """LoRA rank (stages 2-3) (preset)."""
    lora_alpha: int = 128
    """LoRA scaling α (stages 2-3) (preset)."""
    lora_dropout: float = 0.05
    """LoRA dropout (stages 2-3) (preset)."""
    num_workers: int = 2
    """DataLoader worker processes per rank (each reads its own subset of the rank's shards)."""
    shuffle_buffer: int = 1000
    """Samples held in the shuffle buffer of each worker (memory bound of the loader)."""
    group_by_length: bool = True
    """Batch samples of similar length together, within shuffled windows of ~50 micro-batches (train.data.grouping);
    off, each micro-batch is the next samples of the shuffled stream. Either way every micro-batch is padded to its
    longest sample, unless `pack`."""
    pack: bool = False
    """Pack each micro-batch into one sequence without padding: position ids restart per sample and attention never
    crosses samples (train.packing); the loss is the unpacked loss of the same samples."""
    token_cache: str | None = None
    """Folder for the shards' token tables (tokenized once, reused by later epochs and runs with the same tokenizer
    and format); default: `OUT/token-cache`; `off` tokenizes every epoch."""
    seed: int = 42
    """Seed of model init (tiny-random, LoRA), shard order, shuffle buffers and dropout."""
    save_every: int | None = None
    """Save an engine checkpoint (for --resume) every N optimizer steps; the final save always happens."""
    log_keys: bool = False
    """Write the sample keys each rank trained on to `out/keys.rank{R}.txt` (to audit data splits)."""
    progress: bool = True
    """Show the progress bar (rank 0 only)."""
    report_to: str = "tensorboard"
    """Where per-step metrics go besides metrics.jsonl: `tensorboard` (OUT/tensorboard), `wandb` (offline unless
    WANDB_MODE says otherwise), `mlflow` (MLFLOW_TRACKING_URI, else a file store in OUT/mlruns) or `none`."""
    world_size: int = field(default_factory=lambda: _env_int("WORLD_SIZE", 1))
    """Number of processes (from the launcher's WORLD_SIZE; recorded so a resume can check it)."""

    def __post_init__(self) -> None:
        if self.stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {self.stage}")
        if self.stage > 1 and not self.from_checkpoint:
            raise ValueError(f"stage {self.stage} starts from the stage-{self.stage - 1} checkpoint: pass --from DIR")
        for name in ("micro_batch", "global_batch", "max_tokens", "shuffle_buffer", "world_size", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("max_steps", "save_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1 when given, got {getattr(self, name)}")
        for name in ("lr", "epochs", "warmup_ratio", "weight_decay", "grad_clip", "lora_dropout"):
            value = getattr(self, name)  # NaN passes every comparison below, inf would plan endless steps
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.lr <= 0 or self.epochs <= 0:
            raise ValueError(f"lr and epochs must be > 0, got lr={self.lr} epochs={self.epochs}")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.lora_dropout < 1:
            raise ValueError("warmup_ratio and lora_dropout must be in [0, 1)")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.num_workers < 0:
            raise ValueError("weight_decay, grad_clip and num_workers must be ≥ 0")
        if self.zero not in (0, 1, 2, 3):
            raise ValueError(f"zero must be 0, 1, 2 or 3, got {self.zero}")
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("engine", self.engine, ENGINES)
        _check_choice("attn", self.attn, ATTENTIONS)
        _check_choice("projector", self.projector, PROJECTORS)
        _check_choice("report_to", self.report_to, REPORTERS)
        if self.engine == "torch" and self.world_size > 1:
            raise ValueError("engine 'torch' runs one process; use engine 'deepspeed' for several")
        self.accumulation  # raises if the global batch cannot be kept
        _check_locations(self)

    @property
    def token_cache_dir(self) -> str | None:
        """Where the loader keeps token tables (None: no cache)."""
        if self.token_cache == "off":
            return None
        return self.token_cache or str(Path(self.out) / "token-cache")

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step on each process, so that micro × world × accumulation = global batch."""
        per_step = self.micro_batch * self.world_size
        if self.global_batch % per_step:
            raise ValueError(f"global batch {self.global_batch} is not divisible by micro-batch {self.micro_batch} × "
                             f"world size {self.world_size}; change --micro-batch (or --global-batch) so it is")
        return self.global_batch // per_step

    def to_dict(self) -> dict:
        return asdict(self)


def _check_locations(cfg: TrainConfig) -> None:
    """`--shards` may be any storage location; what the trainer writes (and `--from`) must be a local path.

    DeepSpeed saves and loads engine states as files in a folder it opens itself, each rank its own, and the loop
    renames files into place; an object-store `--out` would need every node to stage and upload its part. Refused
    here, before any work, instead of being written to a local `./s3:` folder (docs/cluster.md, "Multi-node training").
    """
    from infra.storage import is_remote

    is_remote(cfg.shards)  # an unknown scheme (hdfs://) is an error naming it
    for flag, value in (("--out", cfg.out), ("--from", cfg.from_checkpoint), ("--token-cache", cfg.token_cache)):
        if value and is_remote(value):
            raise ValueError(f"{flag} {value}: vtl-train keeps checkpoints (--out, --from), engine states and the "
                             "token cache on a local or shared filesystem, not in object storage; give a path (and copy "
                             "the finished checkpoint to the store afterwards)")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def preset_path(preset: str | None, stage: int) -> Path:
    """A preset given by path, by name in train/presets/ (with or without .yaml), or the stage default."""
    name = preset or f"stage{stage}"
    for candidate in (Path(name), PRESET_DIR / name, PRESET_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"preset {name!r} not found (as a path or in {PRESET_DIR})")


def load_preset(path: str | Path) -> dict:
    """A preset's keys, checked against the TrainConfig fields (a typo is an error, not a silently ignored key)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a preset is a mapping of TrainConfig fields")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; valid keys are TrainConfig fields")
    return data


def resolve_config(stage: int, **flags) -> TrainConfig:
    """Defaults ← preset YAML ← flags (flags given as None are 'not set' and leave the preset's value)."""
    from infra.usage import given

    flags = given(**flags)
    path = preset_path(flags.get("preset"), stage)
    values = {**load_preset(path), **flags, "stage": stage, "preset": str(path)}
    return TrainConfig(**values)
