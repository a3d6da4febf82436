"""`vtl-pipeline extract`: manifest → CLIP feature shards, as a list of steps run by an executor.

    decode → sample frames → preprocess → encode → write

The manifest splits into a fixed number of tasks (pipeline/extract/tasks.py); where the encoder runs is decided once,
from the options and the cluster, as the run's `EncoderPlan` (pipeline/extract/encoder_plan.py). The Ray executor
runs one Ray task per manifest task and shares the encoders between them. A rerun resumes; the index comes last.
`extract_one` (pipeline/extract/single.py) runs the same steps in this process on one file.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from infra import storage
from infra.preflight import preflight
from pipeline.contract.provenance import RUN_CONFIG, producer
from pipeline.extract.clip import ModelLoadError, encoder_id
from pipeline.extract.config import ExtractConfig, ExtractError
from pipeline.extract.encoder_plan import Cluster, EncoderPlan, plan_encoders
from pipeline.extract.executors import Executor, InProcessExecutor, Job
from pipeline.extract.lock import RunLocked, run_lock
from pipeline.extract.manifest_rows import check_manifest, count_rows, slices
from pipeline.extract.ray_executor import RayExecutor
from pipeline.extract.report import ExtractSummary, ProgressBar
from pipeline.extract.steps import Decode, Encode, Preprocess, SampleFrames, Write
from pipeline.extract.tasks import PlanMismatch, RunCounts, Task, TaskStore


def default_tasks(rows: int) -> int:
    """Enough slices to keep a few cores busy on small runs, ~250 rows per task on big ones."""
    return max(1, min(rows, 8), math.ceil(rows / 250))


def manifest_sha256(manifest: str) -> str:
    from manifests.schema import file_sha256

    with storage.open(manifest, "rb") as f:
        return file_sha256(f)


def build_job(cfg: ExtractConfig, store: TaskStore, encoder: str, plan: EncoderPlan) -> Job:
    """The extract job, as a list you can read."""
    steps = [
        Decode(threads=cfg.decode_threads),
        SampleFrames(fast_resize=cfg.clip.fast_resize, pixels=cfg.clip.pixel_spec, sampling=cfg.clip.sampling),
        Preprocess(fast_resize=cfg.clip.fast_resize, dtype=plan.pixel_dtype, pixels=cfg.clip.pixel_spec),
        Encode(cfg.clip, batch_size=plan.batch_size, encoder=encoder),
        Write(store, samples_per_shard=cfg.samples_per_shard),
    ]
    return Job(steps, batch_frames=plan.batch_size, on_task_start=store.discard, on_task_done=store.mark_done)


def make_executor(cfg: ExtractConfig) -> tuple[Executor, Cluster]:
    """The executor, and the cluster it runs on (Ray started or joined here)."""
    if cfg.executor == "local":
        executor = InProcessExecutor()
        return executor, executor.cluster()
    executor = RayExecutor(address=cfg.address, num_cpus=cfg.num_cpus)
    try:
        return executor, executor.cluster()
    except Exception as e:
        raise ExtractError(f"cannot start or join Ray (address={cfg.address!r}): {type(e).__name__}: {e}") from e


def run_extract(cfg: ExtractConfig, console=None) -> ExtractSummary:
    """Validate everything, plan the encoders and load them, run the unfinished tasks, then write errors.jsonl and
    index.json. The manifest is never held here: its footer gives the row count, one streaming pass checks it (once
    per run folder), and each task reads its own rows. With nothing left to run, neither Ray nor a model starts."""
    t0 = time.time()
    manifest = cfg.manifest_path
    rows = count_rows(manifest)
    encoder = encoder_id(cfg.clip)
    store = TaskStore(cfg.out_dir, {"num_tasks": cfg.tasks or default_tasks(rows),
                                    "manifest_sha256": manifest_sha256(manifest), "encoder": encoder, "rows": rows})
    store.plan["kinds"] = _checked_kinds(store, manifest, rows)  # refused before anything is written
    preflight(cfg.out_dir, write=True, what="output folder")
    num_tasks = store.plan["num_tasks"]
    outcomes, notes = {}, []
    try:
        with run_lock(cfg.out_dir):
            store.check()
            todo, done = store.resume([Task(t, s) for t, s in enumerate(slices(manifest, rows, num_tasks))])
            ready = time.time()
            if todo:
                executor, job, plan = _start(cfg, store, encoder, todo)
                ready, notes = time.time(), list(plan.notes)
                outcomes = _run(cfg, executor, job, plan, store, todo, console)
            else:
                store.start()  # a folder from before the plan recorded the check gets it now
            failed = {t: o for t, o in outcomes.items() if isinstance(o, str)}
            counts = RunCounts(0, Counter()) if failed else _finalize(store, done, cfg)
    except (PlanMismatch, RunLocked) as e:
        raise ExtractError(str(e)) from e
    step_seconds = sum((o.seconds for o in outcomes.values() if not isinstance(o, str)), Counter())
    return ExtractSummary(cfg.out_dir, rows, counts.samples, counts.errors, len(todo), num_tasks - len(todo),
                          time.time() - t0, failed, step_seconds, ready - t0, notes)


def _checked_kinds(store: TaskStore, manifest: str, rows: int) -> list[str]:
    """The manifest's kinds, after checking every row (`check_manifest`); a folder started from this very manifest
    (same sha256) checked it already and recorded its kinds in its plan."""
    try:
        old = store.old_plan()
    except Exception:  # an unreachable output folder: the output preflight that follows says why, in one line
        old = None
    if old and old.get("manifest_sha256") == store.plan["manifest_sha256"] and "kinds" in old:
        return old["kinds"]
    return check_manifest(manifest, rows)


def _start(cfg: ExtractConfig, store: TaskStore, encoder: str, todo: list[Task]) -> tuple[Executor, Job, EncoderPlan]:
    """The executor, the encoder plan, the job, and its models loaded: an encoder that cannot load, or that the
    nodes' memory cannot hold, stops the job before anything is written. With nothing left to do, nothing loads
    and the plan is not checked against the nodes' memory."""
    executor, cluster = make_executor(cfg)
    try:
        plan = plan_encoders(cfg, cluster, bound_memory=bool(todo))
        job = build_job(cfg, store, encoder, plan)
        if todo:
            executor.setup(job, plan)
    except ModelLoadError as e:
        executor.shutdown()
        raise ExtractError(str(e)) from e
    return executor, job, plan


def _run(cfg: ExtractConfig, executor: Executor, job: Job, plan: EncoderPlan, store: TaskStore, todo: list[Task],
         console) -> dict:
    """Record the plans (run_config.json), run the tasks; the tasks' outcomes."""
    store.start()
    write_run_config(cfg, store.plan, plan)
    try:
        with ProgressBar(cfg.progress, store.plan["rows"], sum(len(t.rows) for t in todo), console) as report:
            return executor.run(job, todo, report)
    finally:
        executor.shutdown()


def _finalize(store: TaskStore, done: dict[int, dict] | None, cfg: ExtractConfig) -> RunCounts:
    """errors.jsonl, then index.json (every task done) with the feature spec (pipeline/extract/spec.py); a folder
    already finished (`done` None) is only read."""
    from pipeline.extract.spec import SPEC_KEY, extract_spec, rows_per_sample

    if done is None:
        return store.counts()
    kinds = store.plan["kinds"]
    spec = extract_spec(cfg.clip)
    return store.finalize(done, num_frames=rows_per_sample(cfg.clip, kinds[0]) if len(kinds) == 1 else None,
                          dim=spec["width"],
                          extra={"rows": store.plan["rows"], "tasks": store.plan["num_tasks"], SPEC_KEY: spec})


def write_run_config(cfg: ExtractConfig, plan: dict, encoders: EncoderPlan) -> str | Path:
    """The resolved options, the task plan, the encoder plan and the producer."""
    resolved = {**asdict(cfg), "manifest": cfg.manifest_path, "out": cfg.out_dir}
    return storage.write_json_atomic(storage.join(cfg.out_dir, RUN_CONFIG), {
        "command": "extract", "config": resolved, "plan": plan, "encoder_plan": encoders.to_json(),
        "producer": producer(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
