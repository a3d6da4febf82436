"""`RayExecutor`: the extract job on a Ray cluster (a local Ray by default, `--address` joins one).

One Ray task per manifest task runs the CPU steps (`run_task`); the shared step (the encoder) lives in `encoders`
actors, spread over the nodes, loaded once each and shared by all tasks. A task sends its batches to an encoder on
its own node when there is one (the pixels then stay in that node's shared-memory object store), else to encoder
t mod E. With `encoders=0` (extract's default without GPUs) there are no actors: every task worker loads the shared
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

from infra.local_ray import get_cause
from pipeline.extract.clip import ModelLoadError
from pipeline.extract.executors import Job, Resolved, Stats, run_task
from pipeline.extract.ray_encoders import EncoderCall, StepActor, in_task_step, node_id, pick_encoder, stage_pixels
from pipeline.extract.steps import Step
from pipeline.extract.tasks import Task

ENCODER_RESTARTS = 3


class ClusterJoinError(RuntimeError):
    """`--address` names a cluster we cannot join (nothing there, or it wants a token we do not have)."""


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


def memory_bound(need: int, nodes: list[dict], encoders: int, task_cpus: float) -> tuple[bool, list[str]]:
    """Whether CPU encoder copies of `need` bytes ask Ray for that memory, and what to tell the user. Asking makes
    Ray run no more copies on a node than its `memory` resource holds. A copy that fits on no node would wait for
    ever, as would `encoders` actors beyond what fits: ModelLoadError, before any work. Nodes that report no memory
    resource cannot bound anything: nothing is asked (it would never be granted)."""
    gib = need / 2**30
    if not any(r.get("memory") for r in nodes):
        return False, ["the Ray nodes report no memory resource: encoder copies are not bounded by memory"]
    most = max(r.get("memory", 0) for r in nodes)
    if need > most:
        raise ModelLoadError(f"one CPU copy of the encoder needs ~{gib:.1f} GiB (its weights and one forward pass "
                             f"of --batch-size frames), more than the {most / 2**30:.1f} GiB of Ray memory on any "
                             "node: lower --batch-size, or run on GPUs")
    fit = sum(int(r.get("memory", 0) // need) for r in nodes)
    if encoders > fit:
        raise ModelLoadError(f"--encoders {encoders}: Ray memory on the nodes holds {fit} CPU copies of the encoder "
                             f"(~{gib:.1f} GiB each); ask for at most {fit}")
    if encoders:
        return True, []
    cpus = max(task_cpus, 1e-9)
    slots = sum(int(r.get("CPU", 0) // cpus) for r in nodes)
    copies = sum(min(int(r.get("CPU", 0) // cpus), int(r.get("memory", 0) // need)) for r in nodes)
    if copies >= slots:
        return True, []
    return True, [f"memory for {copies} in-task encoder copies (~{gib:.1f} GiB each) on {slots} CPU slots: "
                  f"{slots - copies} slot(s) idle; lower --batch-size to use them"]


def check_address(address: str, timeout: float = 5.0) -> None:
    """Before `ray.init(address=HOST:PORT)`: is anything listening, and does its GCS accept our token? Ray itself
    only says `ConnectionError` after ~20 s in both cases. Other forms (auto, ray://) are left to Ray."""
    import socket

    if address in ("auto", "local") or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise ClusterJoinError(f"no Ray cluster answers at {address} ({e}); start one with `ray start --head` "
                               "and pass its GCS address (HOST:6379 by default)") from None
    import ray

    try:
        from ray._raylet import GcsClient  # a private API: if it moves, ray.init below still reports the failure

        GcsClient(address=address)
    except ray.exceptions.AuthenticationError:
        raise ClusterJoinError(f"the Ray cluster at {address} refused us: it uses token authentication. Set "
                               "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                               "~/.ray/auth_token) in this shell, as on the cluster's nodes (docs/cluster.md)") from None
    except Exception:  # noqa: BLE001  (anything else: let ray.init try and report)
        return


class RayExecutor:
    """One Ray task per manifest task (CPU steps inside), `encoders` actors for the shared step.

    `address=None` starts Ray on this machine (or reuses an initialised one); "auto", "HOST:PORT" or
    "ray://host:port" joins a cluster. `encoders=0`: no actors, each task worker runs the shared step itself.
    Paths in the job must be absolute (the driver resolves them) and on storage
    every node reaches: workers run in the folder where their node's `ray start` ran.
    """

    def __init__(self, address: str | None = None, encoders: int = 1, num_cpus: int | None = None,
                 task_retries: int = 3):
        self.address = address
        self.encoders = encoders
        self.num_cpus = num_cpus
        self.task_retries = task_retries
        self.actors: list = []
        self.actor_nodes: list = []
        self.watchdog = None
        self.ready = False
        self.notes: list[str] = []

    def init(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if not self.address:
            # "local": always a fresh Ray on this machine, never a cluster someone else started here (ray.init()
            # with no address would join one it finds through /tmp/ray)
            self._start_local()
            return
        check_address(self.address)
        try:  # an existing cluster (or Ray Client for ray://): its own resources, no local options
            ray.init(address=self.address)
        except ConnectionError as e:
            raise ClusterJoinError(f"cannot join the Ray cluster at {self.address}: {e}. If the cluster uses token "
                                   "authentication, set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN here as on its nodes "
                                   "(docs/cluster.md)") from None

    def _start_local(self) -> None:
        """A Ray on this machine, on 127.0.0.1 only, that dies with this driver (infra.local_ray)."""
        from infra.local_ray import start_local_ray

        self.watchdog = start_local_ray(self.num_cpus)

    def gpus(self) -> int:
        import ray

        self.init()
        return int(ray.cluster_resources().get("GPU", 0))

    def setup(self, job: Job) -> None:
        """Start the shared-step actors and load their models (in-task: in every task worker); a failure here stops
        the job before any task."""
        self.init()
        shared = job.shared
        if shared is not None:
            self._check_memory(job, shared)
        if shared is not None and self.encoders == 0:
            get_cause(self._warm(job, shared))  # the model loads in every task worker, while they import
        elif shared is not None:
            self._start_actors(job, shared)
        self.ready = True

    def _check_memory(self, job: Job, shared: Step) -> None:
        """A CPU encoder asks Ray for the memory one copy holds (`Encode.resources`); see `memory_bound`."""
        import ray

        need = shared.resources.get("memory", 0)
        if need:
            nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
            keep, notes = memory_bound(need, nodes, self.encoders, self._task_cpus(job))
            if not keep:
                shared.resources = {k: v for k, v in shared.resources.items() if k != "memory"}
            self.notes = notes

    def _start_actors(self, job: Job, shared: Step) -> None:
        import ray

        # Calls are not retried by Ray (max_task_retries=0): `EncoderCall` sends a failed call to the next encoder
        # at once instead of waiting for this one's restart (and a single encoder's calls wait for its restart).
        actor_cls = ray.remote(StepActor).options(**shared.resources, max_restarts=ENCODER_RESTARTS,
                                                  max_task_retries=0, scheduling_strategy="SPREAD")
        self.actors = [actor_cls.remote(shared) for _ in range(self.encoders)]
        loading = [a.setup.remote() for a in self.actors]
        # While the models load, let the CPU workers pay their imports too (Ray reuses workers for later tasks).
        warm = self._warm(job, None)
        self.actor_nodes = get_cause(loading)
        get_cause(warm)

    def _warm(self, job: Job, shared: Step | None) -> list:
        """One warm-up task per CPU slot (their refs): imports, the CPU steps' setup and, in-task, the shared step's
        model."""
        import ray

        pre, _, post = job.split()
        cpus = self._task_cpus(job)
        slots = int(ray.available_resources().get("CPU", 0) // cpus) if cpus else 0
        warm = ray.remote(_warm_worker).options(**self._task_options(job))  # as the tasks that will reuse them
        return [warm.remote(pre + post, shared) for _ in range(slots)]

    def _task_options(self, job: Job) -> dict:
        """A task's Ray resources: its CPU steps' CPUs, and in-task the memory of the encoder copy it holds."""
        memory = job.shared.resources.get("memory") if job.shared is not None and not self.encoders else None
        return {"num_cpus": self._task_cpus(job), **({"memory": int(memory)} if memory else {})}

    @staticmethod
    def _task_cpus(job: Job) -> float:
        pre, _, post = job.split()
        return max((s.resources.get("num_cpus", 0) for s in pre + post), default=1)

    def _progress_actor(self):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # On the driver's node: a worker node that dies must not take the run's progress with it.
        here = NodeAffinitySchedulingStrategy(node_id=node_id(), soft=True)
        return ray.remote(_ProgressActor).options(num_cpus=0, scheduling_strategy=here).remote()

    def run(self, job: Job, tasks: list[Task], report: Callable[[Stats], None]) -> dict[int, Stats | str]:
        import ray

        if not self.ready:
            self.setup(job)
        progress = self._progress_actor()
        remote = ray.remote(_ray_task).options(**self._task_options(job), max_retries=self.task_retries)
        job_ref, actors, nodes = ray.put(job), self.actors, self.actor_nodes or [None]
        # A task blocked on its encoder result lends its CPU back to Ray, which would then start every queued task
        # at once, each in a fresh worker paying the torch imports. Keep at most one task per CPU slot in flight.
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // max(self._task_cpus(job), 1e-9)))
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
        self.actors, self.actor_nodes, self.ready = [], [], False


def _delta(now: Stats, before: Stats) -> Stats:
    return Stats(now.items - before.items, now.frames - before.frames, now.errors - before.errors,
                 now.seconds - before.seconds, now.encoder_bytes - before.encoder_bytes)
