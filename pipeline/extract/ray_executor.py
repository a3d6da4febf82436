"""`RayExecutor`: the extract job on a Ray cluster (a local Ray by default, `--address` joins one).

One Ray task per manifest task runs the CPU steps (`run_task`); the shared step (the encoder) lives where the run's
`EncoderPlan` puts it: in actors (pipeline/extract/ray_encoders.py), spread over the nodes, loaded once each and
shared by all tasks. A task sends its batches to an encoder on its own node when there is one (the pixels then stay
in that node's shared-memory object store), else to encoder t mod E. In the tasks (extract's default without GPUs) there are no actors: every task worker loads the shared
step once and calls it in place, so the pixels never leave the process and encoding grows with the CPU slots.
What can fail on a cluster, and what happens:
- a worker process or node dies: Ray retries the task (`task_retries`), which starts again by discarding what it
  left; a rerun resumes whatever still failed.
- an encoder's node dies: Ray restarts the actor elsewhere (`max_restarts`); a call that was in flight, or whose
  result was lost with the node, is sent again to the next encoder (`EncoderCall` in pipeline/extract/
  ray_encoders.py): the task moves to another encoder, or with one encoder waits for its restart; it fails only
  after `CALL_ATTEMPTS` failed sends.
- the progress actor lives on the driver's node, and a driver that cannot reach it goes on without progress.
Each task marker records the node the task ran on (`node`), its encoder's node and the bytes sent to it.
"""
from __future__ import annotations

from typing import Callable

from infra.local_ray import connect, get_cause
from pipeline.extract.encoder_plan import Cluster, EncoderPlan
from pipeline.extract.executors import Job, Resolved, Stats, run_task
from pipeline.extract.ray_encoders import EncoderCall, in_task_step, node_id, pick_encoder, stage_pixels, start_encoders
from pipeline.extract.steps import Step
from pipeline.extract.tasks import Task


class _ProgressActor:
    def __init__(self):
        self.stats = Stats()

    def add(self, stats: Stats) -> None:
        self.stats.add(stats)

    def get(self) -> Stats:
        return self.stats


def _warm_worker(steps: list[Step], shared: Step | None = None) -> None:
    for step in steps:
        step.setup()
    if shared is not None:
        in_task_step(shared)


def _ray_task(job: Job, task: Task, actors: list, actor_nodes: list, progress) -> Stats:
    pre, shared, post = job.split()
    for step in pre + post:
        step.setup()
    node = node_id()
    if shared is not None and not actors:  # in-task: no object store, no actor hop
        local = in_task_step(shared)
        return run_task(job, task, lambda items: Resolved(local(items)), progress.add.remote,
                        {"node": node, "encoder_node": node})
    first = pick_encoder(task.task_id, node, actor_nodes)
    where = {"node": node, "encoder_node": actor_nodes[first]}
    return run_task(job, task, lambda items: EncoderCall(actors, first, items), progress.add.remote, where,
                    stage=stage_pixels)


class RayExecutor:
    """One Ray task per manifest task (CPU steps inside); the shared step where the plan puts it.

    `address=None` starts Ray on this machine (or reuses an initialised one); "auto", "HOST:PORT" or
    "ray://host:port" joins a cluster (infra.local_ray.connect). Paths in the job must be absolute (the driver
    resolves them) and on storage every node reaches: workers run in the folder where their node's `ray start` ran.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, task_retries: int = 3):
        self.address = address
        self.num_cpus = num_cpus
        self.task_retries = task_retries
        self.plan: EncoderPlan | None = None
        self.actors: list = []
        self.actor_nodes: list = []
        self.watchdog = None

    def cluster(self) -> Cluster:
        """Start or join Ray; its GPUs and alive nodes' resources."""
        import ray

        watchdog = connect(self.address, self.num_cpus)
        self.watchdog = watchdog or self.watchdog
        nodes = tuple(n["Resources"] for n in ray.nodes() if n["Alive"])
        return Cluster(gpus=int(ray.cluster_resources().get("GPU", 0)), nodes=nodes)

    def setup(self, job: Job, plan: EncoderPlan) -> None:
        """Start the shared-step actors and load their models (in the tasks: in every task worker); a failure here
        stops the job before any task."""
        self.plan = plan
        shared = job.shared
        if shared is not None and plan.where == "in_task":
            get_cause(self._warm(job, shared))  # the model loads in every task worker, while they import
        elif shared is not None:
            self.actors, loading = start_encoders(shared, plan)
            # While the models load, let the CPU workers pay their imports too (Ray reuses workers for later tasks).
            warm = self._warm(job, None)
            self.actor_nodes = get_cause(loading)
            get_cause(warm)

    def _warm(self, job: Job, shared: Step | None) -> list:
        """One warm-up task per CPU slot (their refs): imports, the CPU steps' setup and, in-task, the shared step's
        model."""
        import ray

        pre, _, post = job.split()
        options = self.plan.task_options  # as the tasks that will reuse the workers
        slots = int(ray.available_resources().get("CPU", 0) // options["num_cpus"])
        warm = ray.remote(_warm_worker).options(**options)
        return [warm.remote(pre + post, shared) for _ in range(slots)]

    def _progress_actor(self):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # On the driver's node: a worker node that dies must not take the run's progress with it.
        here = NodeAffinitySchedulingStrategy(node_id=node_id(), soft=True)
        return ray.remote(_ProgressActor).options(num_cpus=0, scheduling_strategy=here).remote()

    def run(self, job: Job, tasks: list[Task], report: Callable[[Stats], None]) -> dict[int, Stats | str]:
        """The tasks, after `setup`."""
        import ray

        progress = self._progress_actor()
        options = self.plan.task_options
        remote = ray.remote(_ray_task).options(**options, max_retries=self.task_retries)
        job_ref, actors, nodes = ray.put(job), self.actors, self.actor_nodes or [None]
        # A task blocked on its encoder result lends its CPU back to Ray, which would then start every queued task
        # at once, each in a fresh worker paying the torch imports. Keep at most one task per CPU slot in flight.
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // options["num_cpus"]))
        queue, refs = list(tasks), {}
        outcomes: dict[int, Stats | str] = {}
        seen = Stats()
        while refs or queue:
            while queue and len(refs) < slots:
                task = queue.pop(0)
                refs[remote.remote(job_ref, task, actors, nodes, progress)] = task.task_id
            # back as soon as a task ends (its slot is refilled at once), else after 1 s for the progress bar
            done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for ref in done:
                task_id = refs.pop(ref)
                try:
                    outcomes[task_id] = ray.get(ref)
                except ray.exceptions.RayError as e:
                    outcomes[task_id] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            try:
                now = ray.get(progress.get.remote(), timeout=10)
            except ray.exceptions.RayError:  # progress is a convenience; the outcomes above are the record
                continue
            report(_delta(now, seen))
            seen = now
        return outcomes

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors, self.actor_nodes = [], []


def _delta(now: Stats, before: Stats) -> Stats:
    return Stats(now.items - before.items, now.frames - before.frames, now.errors - before.errors,
                 now.seconds - before.seconds, now.encoder_bytes - before.encoder_bytes)
