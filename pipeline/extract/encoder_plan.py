"""Where extract's encoder runs and what it asks of Ray, decided once per run (`plan_encoders`) from the options and
the cluster, before the job is built. Nothing changes the plan afterwards: the job's `Encode` step and the executor
read it, and `run_config.json` records it.

- in this process (`--executor local`): one copy; Ray is asked for nothing.
- actors (`--encoders N`, the default with GPUs: one): N copies shared by all tasks; a task stages each row's
  pixels in the object store and sends its batches to them (pipeline/extract/ray_encoders.py). With GPUs one GPU
  each; without, no CPU of their own (they share the cores with the decode tasks) and the memory of one copy.
- in the tasks (`--encoders 0`, the default without GPUs): every decode task's worker holds one copy, and each task
  asks Ray for that copy's memory, so a node runs no more copies than its memory holds (`memory_bound`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.extract.clip import ModelLoadError, cpu_memory_bytes
from pipeline.extract.config import ExtractConfig, ExtractError

WHERE = ("in_process", "actors", "in_task")
TASK_CPUS = 1
"""CPUs of one decode task: it runs its CPU steps one row at a time in one process."""


@dataclass(frozen=True)
class Cluster:
    """What the plan needs to know of where the job runs: GPUs, and the alive Ray nodes' resources (None when the
    job runs in this process)."""

    gpus: int
    nodes: tuple[dict, ...] | None = None


@dataclass(frozen=True)
class EncoderPlan:
    """Where the encoder runs (`WHERE`), how many actors hold it, and what one copy holds and asks for.

    batch_size: frames per forward pass, and frames per batch a task sends (`--batch-size`).
    copy_bytes: host memory of one CPU copy (clip.cpu_memory_bytes; None on GPUs).
    ask_memory: whether a copy asks Ray for `copy_bytes` of its `memory` resource (not when the nodes report none).
    notes: what the summary tells the user about the plan (e.g. CPU slots left idle for lack of memory).
    """

    where: str
    actors: int
    use_gpu: bool
    batch_size: int
    copy_bytes: int | None = None
    ask_memory: bool = False
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.where not in WHERE or (self.actors > 0) != (self.where == "actors"):
            raise ValueError(f"encoder plan: {self.where!r} with {self.actors} actors")

    @property
    def pixel_dtype(self) -> str:
        """What Preprocess sends: the encoder model's own dtype (a GPU encoder casts to float16 anyway)."""
        return "float16" if self.use_gpu else "float32"

    @property
    def actor_options(self) -> dict:
        """Ray resources of one encoder actor."""
        return {"num_gpus": 1, "num_cpus": 1} if self.use_gpu else {"num_cpus": 0, **self._memory()}

    @property
    def task_options(self) -> dict:
        """Ray resources of one decode task: its CPU and, in the tasks, the memory of the copy its worker holds."""
        return {"num_cpus": TASK_CPUS, **(self._memory() if self.where == "in_task" else {})}

    def _memory(self) -> dict:
        return {"memory": int(self.copy_bytes)} if self.ask_memory and self.copy_bytes else {}

    def to_json(self) -> dict:
        return {**asdict(self), "notes": list(self.notes)}


def plan_encoders(cfg: ExtractConfig, cluster: Cluster, *, bound_memory: bool = True) -> EncoderPlan:
    """The run's encoder plan. `bound_memory=False` (no task left to run) skips the memory check against the nodes.
    Raises ExtractError for `--encoders 0` with GPUs, ModelLoadError for copies the nodes' memory cannot hold."""
    use_gpu = cluster.gpus > 0 and cfg.clip.device != "cpu"
    copy_bytes = None if use_gpu else cpu_memory_bytes(cfg.clip, cfg.batch_size)
    if cfg.executor == "local":
        return EncoderPlan("in_process", 0, use_gpu, cfg.batch_size, copy_bytes)
    actors = encoder_placement(cfg.encoders, use_gpu)
    ask, notes = False, []
    if copy_bytes and bound_memory:
        ask, notes = memory_bound(copy_bytes, list(cluster.nodes or ()), actors, TASK_CPUS)
    return EncoderPlan("actors" if actors else "in_task", actors, use_gpu, cfg.batch_size, copy_bytes, ask,
                       tuple(notes))


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
