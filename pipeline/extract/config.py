"""The options of `vtl-pipeline extract` (`ExtractConfig`) and the error that stops a job before work starts.

`BATCH_SIZE` is `--batch-size`'s default, which `extract_one` (pipeline/extract/single.py) uses too: one value for a
run and a single file.
"""
from __future__ import annotations

from dataclasses import dataclass

from infra import storage
from pipeline.extract.clip import ClipConfig

EXECUTORS = ("ray", "local")
BATCH_SIZE = 256
"""Frames per encoder forward pass, and frames per batch a task sends to the encoder."""


class ExtractError(RuntimeError):
    """A wrong option, an unusable input or output: the job stops before work starts (CLI exit code 2)."""


@dataclass(frozen=True)
class ExtractConfig:
    """Options of `vtl-pipeline extract`, one field per CLI option.

    dataset / data_root: with `dataset` alone, manifest = data_root/dataset/manifest.parquet and
        out = data_root/dataset/features. `manifest` / `out` override either.
    executor: "ray" (default; local Ray when `address` is None, else join that cluster) or "local" (in-process).
    tasks: fixed number of manifest slices (None: derived from the row count, stored in the plan for reruns).
    samples_per_shard: samples per tar. batch_size: frames per encoder forward pass.
    encoders: encoder actors; 0 runs the encoder inside every decode task (CPU only); None: one actor when the
        cluster has GPUs, else 0 (pipeline/extract/encoder_plan.py).
    decode_threads: decoder threads per decode task. num_cpus: CPUs of a local Ray (None: all).
    clip: the encoder (model, weights, fast_resize, device).
    """

    dataset: str | None = None
    manifest: str | None = None
    out: str | None = None
    data_root: str = "./data"
    executor: str = "ray"
    address: str | None = None
    tasks: int | None = None
    samples_per_shard: int = 1000
    encoders: int | None = None
    batch_size: int = BATCH_SIZE
    decode_threads: int = 1
    num_cpus: int | None = None
    progress: bool = True
    clip: ClipConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.clip, ClipConfig):
            raise ValueError("an encoder is required: clip=ClipConfig(...)")
        if not (self.dataset or self.manifest):
            raise ValueError("give --dataset NAME or --manifest FILE")
        if not self.out and not self.dataset:
            raise ValueError("give --out DIR (or --dataset NAME to write under the data root)")
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor must be one of {EXECUTORS}, got {self.executor!r}")
        if self.address and self.executor != "ray":
            raise ValueError("--address needs the ray executor")
        for name in ("samples_per_shard", "batch_size", "decode_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if self.encoders is not None and self.encoders < 0:
            raise ValueError(f"--encoders must be ≥ 0 (0: in the decode tasks), got {self.encoders}")
        if self.tasks is not None and self.tasks < 1:
            raise ValueError(f"--tasks must be ≥ 1, got {self.tasks}")

    # Absolute, resolved here on the driver: Ray workers run in the folder of their node's `ray start`.
    @property
    def manifest_path(self) -> str:
        """The manifest's location, resolved (local paths absolute, on the driver)."""
        return storage.resolve(self.manifest or storage.join(self.data_root, self.dataset, "manifest.parquet"))

    @property
    def out_dir(self) -> str:
        return storage.resolve(self.out or storage.join(self.data_root, self.dataset, "features"))
