"""Where the steps of a job run: the `Executor` protocol, `InProcessExecutor` (tests, debugging) and the helpers both
it and `RayExecutor` (the default, in `pipeline/extract/ray_executor.py`) share.

Both run the same `run_task`: a task's rows go through the steps batch by batch; the `shared` step (the encoder) is
called through a future so that decoding batch k+1 overlaps encoding batch k. On Ray there is one Ray task per
manifest task (the CPU steps run inside it) and a pool of actors for the shared step, loaded once each and used by
all tasks. Batches are cut from the row sequence alone, so both executors feed the encoder identical tensors.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

from pipeline.contract.timing import NUM_FRAMES
from pipeline.extract.encoder_plan import Cluster, EncoderPlan
from pipeline.extract.steps import Item, Step
from pipeline.extract.tasks import Task

FRAMES_PER_ROW = {"video": NUM_FRAMES, "image": 1}


@dataclass
class Job:
    """A readable list of steps plus the task hooks (start: discard leftovers; done: write the marker)."""

    steps: list[Step]
    batch_frames: int
    on_task_start: Callable[[int], None]
    on_task_done: Callable[[Task, list[dict]], None]

    def __post_init__(self) -> None:
        if sum(s.shared for s in self.steps) > 1:
            raise ValueError("a job has at most one shared (model) step")

    @property
    def video_frames(self) -> int:
        """Frames a video row gives under the sampling step's rule (`uniform N`: N; `fps`: at most M), VTimeLLM's
        100 when no step samples frames. Frames, not feature rows: the encoder's cost is per frame, whatever the
        tokens per frame pooled from its patch grid afterwards."""
        rule = next((s.sampling for s in self.steps if isinstance(getattr(s, "sampling", None), dict)), {})
        return int(rule.get("max_frames") or rule.get("frames") or FRAMES_PER_ROW["video"])

    @property
    def shared(self) -> Step | None:
        return next((s for s in self.steps if s.shared), None)

    def split(self) -> tuple[list[Step], Step | None, list[Step]]:
        shared = self.shared
        if shared is None:
            return self.steps, None, []
        i = self.steps.index(shared)
        return self.steps[:i], shared, self.steps[i + 1:]


def batches(rows: list[dict], batch_frames: int, video_frames: int = FRAMES_PER_ROW["video"]) -> Iterator[list[dict]]:
    """Consecutive rows until their expected frames reach `batch_frames` (a video counts `video_frames`, the
    sampling rule's N or most frames M, VTimeLLM's 100 by default; an image 1)."""
    batch, frames = [], 0
    for row in rows:
        batch.append(row)
        frames += video_frames if row["kind"] == "video" else FRAMES_PER_ROW[row["kind"]]
        if frames >= batch_frames:
            yield batch
            batch, frames = [], 0
    if batch:
        yield batch


@dataclass
class Stats:
    """Rows done, frames encoded, errors by reason, and seconds spent per step (`wait:<step>` = time a task
    waited for the shared step's result: the part of encoding that decoding did not hide)."""

    items: int = 0
    frames: int = 0
    errors: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)
    encoder_bytes: int = 0  # array bytes sent to the shared step through the object store (0 when it runs in place)

    def add(self, other: "Stats") -> None:
        self.items += other.items
        self.frames += other.frames
        self.errors.update(other.errors)
        self.seconds.update(other.seconds)
        self.encoder_bytes += other.encoder_bytes


def payload_bytes(items: list[Item]) -> int:
    """Bytes of the arrays an item carries to the shared step (pixels or uint8 crops)."""
    return sum(i.pixels.nbytes for i in items if i.pixels is not None)


def batch_stats(items: list[Item]) -> Stats:
    frames = sum(len(i.meta.get("frame_indices", ())) for i in items if i.error is None)
    return Stats(len(items), frames, Counter(i.error.reason for i in items if i.error is not None))


class Resolved:
    """A future that is already resolved (the in-process executor calls the shared step directly)."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def run_task(job: Job, task: Task, call_shared: Callable[[list[Item]], object],
             report: Callable[[Stats], None], where: dict | None = None,
             stage: Callable[[list[Item]], None] | None = None) -> Stats:
    """All rows of one task through all steps; `call_shared(items)` returns a future with `.result()`.
    `where` (the Ray node of the task and of its encoder) goes into the task's marker with the bytes sent.
    `stage(items)`, when given, moves one row's payload out of this process as soon as it is ready (Ray: into the
    object store), so the task holds one video's pixels at a time instead of a whole batch's."""
    pre, shared, post = job.split()
    job.on_task_start(task.task_id)
    for step in job.steps:
        step.open_task(task.task_id)
    run, pending = _TaskRun(shared, post, report), None
    for rows in batches(task.rows, job.batch_frames, job.video_frames):
        items = run.cpu_steps(pre, rows, stage if shared is not None else None)
        future = run.timed(shared.name, call_shared, items) if shared is not None else Resolved(items)
        if pending is not None:
            run.finish(pending)
        pending = future
    if pending is not None:
        run.finish(pending)
    job.on_task_done(task, [step.close_task() for step in job.steps]
                     + [{"seconds": dict(run.total.seconds), "encoder_bytes": run.total.encoder_bytes, **(where or {})}])
    return run.total


class _TaskRun:
    """One task under way: seconds per step since the last report, bytes sent per batch in flight, the totals."""

    def __init__(self, shared: Step | None, post: list[Step], report: Callable[[Stats], None]):
        self.shared, self.post, self.report = shared, post, report
        self.total, self.timer, self.sent = Stats(), Counter(), []

    def timed(self, name: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.timer[name] += time.perf_counter() - t0
        return out

    def cpu_steps(self, pre: list[Step], rows: list[dict], stage) -> list[Item]:
        """One row through all CPU steps at a time: one video's full-resolution frames in memory."""
        items, nbytes = [], 0
        for row in rows:
            one = [Item(row=row)]
            for step in pre:
                one = self.timed(step.name, step, one)
            if stage is not None:  # bytes counted as they leave the process
                nbytes += payload_bytes(one)
                stage(one)
            items += one
        self.sent.append(nbytes)
        return items

    def finish(self, future) -> None:
        """A batch back from the shared step: through the steps after it, then reported."""
        items = self.timed(f"wait:{self.shared.name}" if self.shared else "wait", future.result)
        for step in self.post:
            items = self.timed(step.name, step, items)
        stats = batch_stats(items)
        stats.seconds, stats.encoder_bytes = Counter(self.timer), self.sent.pop(0)
        self.timer.clear()
        self.total.add(stats)
        self.report(stats)


class Executor(Protocol):
    """What runs a job: `cluster()` first (Ray: started or joined), then, with the plan made from it,
    `setup(job, plan)` once (the models load: a failure stops the job before any task), `run` the tasks, and
    `shutdown()` whatever happened."""

    def cluster(self) -> Cluster:
        """Where the job will run: what `plan_encoders` needs to know."""
        ...

    def setup(self, job: Job, plan: EncoderPlan) -> None:
        """Load the steps' models where the plan puts them."""
        ...

    def run(self, job: Job, tasks: list[Task], report: Callable[[Stats], None]) -> dict[int, Stats | str]:
        """Every task's outcome: its Stats, or why it failed (a string; a rerun resumes it)."""
        ...

    def shutdown(self) -> None:
        """Release what setup started."""
        ...


class InProcessExecutor:
    """Every step in this process, tasks one after another."""

    def cluster(self) -> Cluster:
        import torch

        return Cluster(gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0)

    def setup(self, job: Job, plan: EncoderPlan) -> None:
        for step in job.steps:
            step.setup()

    def run(self, job: Job, tasks: list[Task], report: Callable[[Stats], None]) -> dict[int, Stats | str]:
        shared = job.shared
        return {t.task_id: run_task(job, t, lambda items: Resolved(shared(items)), report, {"node": None})
                for t in tasks}

    def shutdown(self) -> None:
        """Nothing to release: the steps live in this process."""
