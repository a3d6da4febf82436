"""`vtl-pipeline extract`: manifest → CLIP feature shards, as a list of steps run by an executor.

    decode → sample frames → preprocess → encode → write

The manifest splits into a fixed number of tasks (pipeline/extract/tasks.py); the Ray executor runs one Ray task per
manifest task and shares a pool of encoder actors between them. A rerun resumes; the index comes last.
`extract_one` runs the same steps in this process on one file (for vtl-chat and the eval helper).
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from infra import storage
from infra.preflight import preflight
from pipeline.contract.provenance import RUN_CONFIG, producer
from pipeline.contract.shards import FEATURE_DIM
from pipeline.extract.clip import ClipConfig, encoder_id
from pipeline.extract.decode import MediaError
from pipeline.extract.executors import FRAMES_PER_ROW, InProcessExecutor, Job, Stats
from pipeline.extract.lock import RunLocked, run_lock
from pipeline.extract.ray_executor import RayExecutor
from pipeline.extract.steps import Decode, Encode, Item, Preprocess, SampleFrames, Write
from pipeline.extract.tasks import PlanMismatch, RunCounts, Task, TaskStore, split_tasks

EXECUTORS = ("ray", "local")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


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
        cluster has GPUs, else 0 (`encoder_placement`).
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
    batch_size: int = 256
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


@dataclass
class ExtractSummary:
    out_dir: str
    rows: int
    samples: int
    errors: Counter
    tasks_run: int
    tasks_skipped: int
    seconds: float
    failed: dict = field(default_factory=dict)
    step_seconds: Counter = field(default_factory=Counter)
    startup_seconds: float = 0.0  # of `seconds`: reading the manifest, starting/joining Ray, loading the encoders
    notes: list = field(default_factory=list)  # what the executor said about the run (e.g. CPU slots left idle)


def default_tasks(rows: int) -> int:
    """Enough slices to keep a few cores busy on small runs, ~250 rows per task on big ones."""
    return max(1, min(rows, 8), math.ceil(rows / 250))


def load_rows(manifest: str) -> list[dict]:
    from manifests.schema import iter_manifest, manifest_problem

    if storage.is_remote(manifest):
        preflight(manifest, what="manifest")  # bucket, credentials, endpoint, the object itself
    if not storage.isfile(manifest):
        raise ExtractError(f"manifest {manifest} not found (--manifest FILE, or --dataset NAME with --data-root)")
    try:
        with storage.open(manifest, "rb") as f:
            rows = [r.to_json() for r in iter_manifest(f)]
    except Exception as e:
        raise ExtractError(f"cannot read manifest {manifest}: {type(e).__name__}: {e}") from e
    if problem := manifest_problem(rows):  # refused before any work: a repeated key would damage shards
        raise ExtractError(f"manifest {manifest} {problem}")
    for row in rows:  # relative media: relative to the driver's folder, wherever a task runs
        if "://" not in row["media"]:
            row["media"] = os.path.abspath(row["media"])
    return rows


def manifest_sha256(manifest: str) -> str:
    from manifests.schema import file_sha256

    with storage.open(manifest, "rb") as f:
        return file_sha256(f)


def build_job(cfg: ExtractConfig, store: TaskStore, encoder: str, use_gpu: bool) -> Job:
    """The extract job, as a list you can read."""
    steps = [
        Decode(threads=cfg.decode_threads),
        SampleFrames(fast_resize=cfg.clip.fast_resize),
        Preprocess(fast_resize=cfg.clip.fast_resize, dtype="float16" if use_gpu else "float32"),
        Encode(cfg.clip, batch_size=cfg.batch_size, encoder=encoder, use_gpu=use_gpu),
        Write(store, samples_per_shard=cfg.samples_per_shard),
    ]
    return Job(steps, batch_frames=cfg.batch_size, on_task_start=store.discard, on_task_done=store.mark_done)


def encoder_placement(encoders: int | None, use_gpu: bool) -> int:
    """Encoder actors to start: as asked, else one per run with GPUs (`--encoders` = the GPU count spreads them)
    and none without: on CPUs each decode task encodes its own rows, which skips the pixel copy through the object
    store and the actor hop and lets encoding grow with the CPU slots (docs/extract.md: one model copy per CPU slot).
    """
    if encoders is None:
        return 1 if use_gpu else 0
    if encoders == 0 and use_gpu:
        raise ExtractError("--encoders 0 runs the encoder inside the CPU decode tasks; with GPUs give --encoders N "
                           "(one GPU each) or --device cpu")
    return encoders


def make_executor(cfg: ExtractConfig):
    if cfg.executor == "local":
        import torch

        return InProcessExecutor(), torch.cuda.is_available() and cfg.clip.device != "cpu"
    ex = RayExecutor(address=cfg.address, num_cpus=cfg.num_cpus)
    try:
        gpus = ex.gpus()
    except Exception as e:
        raise ExtractError(f"cannot start or join Ray (address={cfg.address!r}): {type(e).__name__}: {e}") from e
    use_gpu = gpus > 0 and cfg.clip.device != "cpu"
    ex.encoders = encoder_placement(cfg.encoders, use_gpu)
    return ex, use_gpu


def run_extract(cfg: ExtractConfig, console=None) -> ExtractSummary:
    """Validate everything, load the encoders, run the unfinished tasks, then write errors.jsonl and index.json."""
    t0 = time.time()
    rows = load_rows(cfg.manifest_path)
    preflight(cfg.out_dir, write=True, what="output folder")
    encoder = encoder_id(cfg.clip)
    plan = {"num_tasks": cfg.tasks or default_tasks(len(rows)), "manifest_sha256": manifest_sha256(cfg.manifest_path),
            "encoder": encoder, "rows": len(rows)}
    store = TaskStore(cfg.out_dir, plan)
    try:
        with run_lock(cfg.out_dir):
            store.check()
            todo = store.todo(split_tasks(rows, plan["num_tasks"]))
            executor, use_gpu = make_executor(cfg)
            job = build_job(cfg, store, encoder, use_gpu)
            outcomes, ready = _run(cfg, executor, job, store, todo, use_gpu, console)
            failed = {t: o for t, o in outcomes.items() if isinstance(o, str)}
            counts = RunCounts(0, Counter())
            if not failed:
                kinds = {r["kind"] for r in rows}
                counts = store.finalize(num_frames=FRAMES_PER_ROW[kinds.pop()] if len(kinds) == 1 else None,
                                        dim=FEATURE_DIM, extra={"rows": len(rows), "tasks": plan["num_tasks"]})
    except (PlanMismatch, RunLocked) as e:
        raise ExtractError(str(e)) from e
    step_seconds = sum((o.seconds for o in outcomes.values() if not isinstance(o, str)), Counter())
    return ExtractSummary(cfg.out_dir, len(rows), counts.samples, counts.errors, len(todo),
                          plan["num_tasks"] - len(todo), time.time() - t0, failed, step_seconds, ready - t0,
                          list(getattr(executor, "notes", [])))


def _run(cfg: ExtractConfig, executor, job: Job, store: TaskStore, todo: list[Task], use_gpu: bool,
         console) -> tuple[dict, float]:
    """Load the models (a broken encoder stops the job before anything is written), record the plan, run the tasks.
    Returns the tasks' outcomes and the time the workers were ready."""
    from pipeline.extract.clip import ModelLoadError

    try:
        if todo:
            executor.setup(job)
    except ModelLoadError as e:
        executor.shutdown()
        raise ExtractError(str(e)) from e
    ready = time.time()
    store.start()
    write_run_config(cfg, store.plan, use_gpu, getattr(executor, "encoders", None),
                     job.shared.resources.get("memory") if job.shared is not None else None)
    try:
        with _progress(cfg, store.plan["rows"], sum(len(t.rows) for t in todo), console) as report:
            return (executor.run(job, todo, report) if todo else {}), ready
    finally:
        executor.shutdown()


def write_run_config(cfg: ExtractConfig, plan: dict, use_gpu: bool, encoder_actors: int | None,
                     encoder_memory: int | None = None) -> str | Path:
    resolved = {**asdict(cfg), "manifest": cfg.manifest_path, "out": cfg.out_dir}
    return storage.write_json_atomic(storage.join(cfg.out_dir, RUN_CONFIG), {
        "command": "extract", "config": resolved, "plan": plan, "gpu_encoders": use_gpu,
        "encoder_actors": encoder_actors, "encoder_memory_bytes": encoder_memory, "producer": producer(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


class _progress:
    """A rich progress bar over manifest rows: videos/s, frames/s, errors so far, ETA."""

    def __init__(self, cfg: ExtractConfig, total: int, todo: int, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("extract"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                            TimeRemainingColumn(), console=console, disable=not cfg.progress)
        self.task = self.bar.add_task("extract", total=total, completed=total - todo, info="")
        self.stats, self.t0 = Stats(), time.time()

    def __enter__(self):
        self.bar.start()
        return self.report

    def report(self, stats: Stats) -> None:
        self.stats.add(stats)
        dt = max(time.time() - self.t0, 1e-6)
        info = (f"{self.stats.items / dt:.2f} videos/s  {self.stats.frames / dt:.0f} frames/s  "
                f"errors {sum(self.stats.errors.values())}")
        self.bar.update(self.task, advance=stats.items, info=info)

    def __exit__(self, *exc) -> None:
        self.bar.stop()


_ENCODERS: dict = {}


def extract_one(media_path: str | os.PathLike, clip_config: ClipConfig, window: tuple[float, float] | None = None,
                *, batch_size: int = 100) -> tuple[np.ndarray, dict]:
    """Features of one video or image with the extract steps, in this process: (float16 (N, 768), meta dict).

    N = 100 for a video (optionally inside `window` seconds), 1 for an image. The encoder loads once per config and
    is kept for later calls. Bad media raises `pipeline.extract.decode.MediaError` (with `.reason`).
    """
    from manifests.schema import make_key

    path = str(media_path)
    kind = "image" if Path(path).suffix.lower() in IMAGE_SUFFIXES else "video"
    row = {"key": make_key(Path(path).stem), "dataset": "user", "kind": kind, "media": path,
           "window": list(window) if window else None, "duration": None, "events": [], "caption": None,
           "source_id": None}
    encode = _ENCODERS.get(clip_config)
    if encode is None:
        import torch

        encode = Encode(clip_config, batch_size, encoder_id(clip_config), use_gpu=torch.cuda.is_available())
        encode.setup()
        _ENCODERS[clip_config] = encode
    items = [Item(row=row)]
    for step in (Decode(), SampleFrames(clip_config.fast_resize), Preprocess(clip_config.fast_resize), encode):
        items = step(items)
    item = items[0]
    if item.error is not None:
        raise MediaError(item.error.reason, item.error.detail)
    return item.features, item.meta


def print_summary(s: ExtractSummary, console=None) -> int:
    """Counts by outcome and error reason; returns the exit code (1 when tasks failed and a rerun is needed, or
    when no row became a sample)."""
    from rich.console import Console

    console = console or Console()
    rate = s.rows / s.seconds if s.seconds else 0.0
    running = s.seconds - s.startup_seconds
    after = f", {s.rows / running:.2f} rows/s after {s.startup_seconds:.1f} s of start-up" if s.tasks_run and \
        s.startup_seconds and running > 0 else ""
    console.print(f"extract: {s.rows} rows, {s.tasks_run} tasks run, {s.tasks_skipped} already done, "
                  f"{s.seconds:.1f} s ({rate:.2f} rows/s{after})")
    for note in s.notes:
        console.print(f"  [yellow]{note}")
    if s.failed:
        for task_id, why in sorted(s.failed.items()):
            console.print(f"  task {task_id} failed: {why}")
        console.print(f"[red]{len(s.failed)} task(s) failed; rerun the same command to resume (index not written)")
        return 1
    console.print(f"  {s.samples} samples in shards, {sum(s.errors.values())} in errors.jsonl")
    if s.step_seconds:
        console.print("  seconds in steps, summed over tasks: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in s.step_seconds.items()))
    for reason, n in s.errors.most_common():
        console.print(f"    {reason}: {n}")
    console.print(f"  → {s.out_dir}")
    if s.rows and not s.samples:  # every row an error record: nothing was produced, so not a success
        console.print(f"[red]error: no sample extracted, all {s.rows} rows failed (see {s.out_dir}/errors.jsonl)")
        return 1
    return 0
