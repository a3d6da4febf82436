"""Where the steps of a job run: `InProcessExecutor` (tests, debugging, single videos) or `RayExecutor` (default).

Both run the same `run_task`: a task's rows go through the steps batch by batch; the `shared` step (the encoder) is
called through a future so that decoding batch k+1 overlaps encoding batch k. On Ray there is one Ray task per
manifest task (the CPU steps run inside it) and a pool of actors for the shared step, loaded once each and used by
all tasks. Batches are cut from the row sequence alone, so both executors feed the encoder identical tensors.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

from pipeline.contract.timing import NUM_FRAMES
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
    def shared(self) -> Step | None:
        return next((s for s in self.steps if s.shared), None)

    def split(self) -> tuple[list[Step], Step | None, list[Step]]:
        shared = self.shared
        if shared is None:
            return self.steps, None, []
        i = self.steps.index(shared)
        return self.steps[:i], shared, self.steps[i + 1:]


def batches(rows: list[dict], batch_frames: int) -> Iterator[list[dict]]:
    """Consecutive rows until their expected frames reach `batch_frames` (a video counts 100, an image 1)."""
    batch, frames = [], 0
    for row in rows:
        batch.append(row)
        frames += FRAMES_PER_ROW[row["kind"]]
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

    def add(self, other: "Stats") -> None:
        self.items += other.items
        self.frames += other.frames
        self.errors.update(other.errors)
        self.seconds.update(other.seconds)


def batch_stats(items: list[Item]) -> Stats:
    frames = sum(len(i.meta.get("frame_indices", ())) for i in items if i.error is None)
    return Stats(len(items), frames, Counter(i.error.reason for i in items if i.error is not None))


class _Done:
    """A future that is already resolved (the in-process executor calls the shared step directly)."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def run_task(job: Job, task: Task, call_shared: Callable[[list[Item]], object],
             report: Callable[[Stats], None]) -> Stats:
    """All rows of one task through all steps; `call_shared(items)` returns a future with `.result()`."""
    pre, shared, post = job.split()
    job.on_task_start(task.task_id)
    for step in job.steps:
        step.open_task(task.task_id)
    total, pending, timer = Stats(), None, Counter()

    def timed(name: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        timer[name] += time.perf_counter() - t0
        return out

    def finish(future) -> None:
        items = timed(f"wait:{shared.name}" if shared else "wait", future.result)
        for step in post:
            items = timed(step.name, step, items)
        stats = batch_stats(items)
        stats.seconds = Counter(timer)
        timer.clear()
        total.add(stats)
        report(stats)

    for rows in batches(task.rows, job.batch_frames):
        items = [Item(row=r) for r in rows]
        for step in pre:
            items = timed(step.name, step, items)
        future = timed(shared.name, call_shared, items) if shared is not None else _Done(items)
        if pending is not None:
            finish(pending)
        pending = future
    if pending is not None:
        finish(pending)
    job.on_task_done(task, [step.close_task() for step in job.steps] + [{"seconds": dict(total.seconds)}])
    return total


class InProcessExecutor:
    """Every step in this process, tasks one after another."""

    def setup(self, job: Job) -> None:
        for step in job.steps:
            step.setup()

    def run(self, job: Job, tasks: list[Task], report: Callable[[Stats], None]) -> dict[int, Stats | str]:
        self.setup(job)
        shared = job.shared
        return {t.task_id: run_task(job, t, lambda items: _Done(shared(items)), report) for t in tasks}

    def shutdown(self) -> None:
        """Nothing to release: the steps live in this process."""


class _StepActor:
    """Holds one shared step; the model loads in `setup()` (and again, lazily, after Ray restarts the actor)."""

    def __init__(self, step: Step):
        self.step = step
        self.ready = False

    def setup(self) -> bool:
        if not self.ready:
            self.step.setup()
            self.ready = True
        return True

    def call(self, items: list[Item]) -> list[Item]:
        self.setup()
        return self.step(items)


class _ProgressActor:
    def __init__(self):
        self.stats = Stats()

    def add(self, stats: Stats) -> None:
        self.stats.add(stats)

    def get(self) -> Stats:
        return self.stats


class _RayFuture:
    def __init__(self, ref):
        self.ref = ref

    def result(self):
        import ray

        return ray.get(self.ref)


def _warm_worker(steps: list[Step]) -> None:
    for step in steps:
        step.setup()


def _ray_task(job: Job, task: Task, actors: list, progress) -> Stats:
    pre, _, post = job.split()
    for step in pre + post:
        step.setup()
    actor = actors[task.task_id % len(actors)]
    return run_task(job, task, lambda items: _RayFuture(actor.call.remote(items)), progress.add.remote)


class RayExecutor:
    """One Ray task per manifest task (CPU steps inside), `encoders` actors for the shared step.

    `address=None` starts Ray on this machine (or reuses an initialised one); "auto" or "ray://host:port" joins a
    cluster unchanged. Task outputs go to the job's folder, which must be shared storage on a multi-node cluster.
    """

    def __init__(self, address: str | None = None, encoders: int = 1, num_cpus: int | None = None,
                 task_retries: int = 3):
        self.address = address
        self.encoders = encoders
        self.num_cpus = num_cpus
        self.task_retries = task_retries
        self.actors: list = []

    def init(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.address:  # an existing cluster (or Ray Client for ray://): its own resources, no local options
            ray.init(address=self.address)
        else:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False)

    def gpus(self) -> int:
        import ray

        self.init()
        return int(ray.cluster_resources().get("GPU", 0))

    def setup(self, job: Job) -> None:
        """Start the shared-step actors and load their models; a failure here stops the job before any task."""
        import ray

        self.init()
        shared = job.shared
        if shared is None:
            return
        actor_cls = ray.remote(_StepActor).options(**shared.resources, max_restarts=3, max_task_retries=3)
        self.actors = [actor_cls.remote(shared) for _ in range(self.encoders)]
        loading = [a.setup.remote() for a in self.actors]
        # While the models load, let the CPU workers pay their imports too (Ray reuses workers for later tasks).
        pre, _, post = job.split()
        cpus = self._task_cpus(job)
        slots = int(ray.available_resources().get("CPU", 0) // cpus) if cpus else 0
        warm = [ray.remote(_warm_worker).options(num_cpus=cpus).remote(pre + post) for _ in range(slots)]
        try:
            ray.get(loading)
        except ray.exceptions.RayTaskError as e:
            raise (e.cause if isinstance(e.cause, Exception) else e.as_instanceof_cause()) from None
        ray.get(warm)

    @staticmethod
    def _task_cpus(job: Job) -> float:
        pre, _, post = job.split()
        return max((s.resources.get("num_cpus", 0) for s in pre + post), default=1)

    def run(self, job: Job, tasks: list[Task], report: Callable[[Stats], None]) -> dict[int, Stats | str]:
        import ray

        if not self.actors:
            self.setup(job)
        progress = ray.remote(_ProgressActor).options(num_cpus=0).remote()
        remote = ray.remote(_ray_task).options(num_cpus=self._task_cpus(job), max_retries=self.task_retries)
        job_ref, actors = ray.put(job), self.actors or [None]
        # A task blocked on its encoder result lends its CPU back to Ray, which would then start every queued task
        # at once, each in a fresh worker paying the torch imports. Keep at most one task per CPU slot in flight.
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // max(self._task_cpus(job), 1e-9)))
        queue, refs = list(tasks), {}
        outcomes: dict[int, Stats | str] = {}
        seen = Stats()
        while refs or queue:
            while queue and len(refs) < slots:
                task = queue.pop(0)
                refs[remote.remote(job_ref, task, actors, progress)] = task.task_id
            done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.5)
            for ref in done:
                task_id = refs.pop(ref)
                try:
                    outcomes[task_id] = ray.get(ref)
                except ray.exceptions.RayError as e:
                    outcomes[task_id] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            now = ray.get(progress.get.remote())
            report(_delta(now, seen))
            seen = now
        return outcomes

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []


def _delta(now: Stats, before: Stats) -> Stats:
    return Stats(now.items - before.items, now.frames - before.frames, now.errors - before.errors,
                 now.seconds - before.seconds)
