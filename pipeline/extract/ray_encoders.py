"""Where extract's shared step (the encoder) runs on Ray: in actors that all tasks share, or inside each task worker
(the run's `EncoderPlan` says which, and what each copy asks of Ray).

Actors (`--encoders N`): `start_encoders` starts them, spread over the nodes; a task puts each row's pixels into the
object store as soon as they are ready (`stage_pixels`), sends a batch of references to an encoder on its own node
when there is one (`pick_encoder`), and `EncoderCall` sends a batch whose actor or result was lost to the next
encoder. In-task (`--encoders 0`, the default without GPUs): `in_task_step` loads the step once per worker process
and keeps it for the tasks that worker runs later, so pixels never leave the process.
"""
from __future__ import annotations

import functools
import time

from pipeline.extract.encoder_plan import EncoderPlan
from pipeline.extract.steps import Item, Step

CALL_ATTEMPTS = 8  # per encoder call, across encoders, before the task gives up
ENCODER_RESTARTS = 3


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class StepActor:
    """Holds one shared step; the model loads in `setup()` (and again, lazily, after Ray restarts the actor)."""

    def __init__(self, step: Step):
        self.step = step
        self.ready = False

    def setup(self) -> str:
        if not self.ready:
            self.step.setup()
            _trim_heap()  # what loading left free (the text tower, a checkpoint's tensors) back to the OS
            self.ready = True
        return node_id()

    def call(self, items: list[Item]) -> list[Item]:
        import ray

        self.setup()
        staged = [i for i in items if isinstance(i.pixels, ray.ObjectRef)]  # put by the task one row at a time
        for item, pixels in zip(staged, ray.get([i.pixels for i in staged])):
            item.pixels = pixels
        return self.step(items)


def start_encoders(step: Step, plan: EncoderPlan) -> tuple[list, list]:
    """`plan.actors` actors holding `step`, with the plan's resources each, spread over the nodes: (the actors,
    the refs of their model loading, each resolving to the actor's node id)."""
    import ray

    # Calls are not retried by Ray (max_task_retries=0): `EncoderCall` sends a failed call to the next encoder
    # at once instead of waiting for this one's restart (and a single encoder's calls wait for its restart).
    actor_cls = ray.remote(StepActor).options(**plan.actor_options, max_restarts=ENCODER_RESTARTS,
                                              max_task_retries=0, scheduling_strategy="SPREAD")
    actors = [actor_cls.remote(step) for _ in range(plan.actors)]
    return actors, [a.setup.remote() for a in actors]


def stage_pixels(items: list[Item]) -> None:
    """A row's pixels into the object store as soon as they are ready: the task's heap holds one video's pixels,
    not a batch's; the batch object sent to the encoder holds the references (which keep the pixels alive)."""
    import ray

    for item in items:
        if item.pixels is not None:
            item.pixels = ray.put(item.pixels)
    _trim_heap()


def _trim_heap() -> None:
    """Hand the heap a row's frames and temporaries left free back to the OS (glibc keeps it otherwise). Its effect
    on peak memory and speed was within this machine's noise across three A/B measurements (docs/extract.md).
    No-op without glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's `malloc_trim`, looked up once per worker (None without glibc)."""
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


class EncoderCall:
    """A future for one batch at the encoders: `actors[first]` first; when an actor is gone, or the node holding
    the result died, the same batch (kept once, as an object the task owns) goes to the next encoder."""

    def __init__(self, actors: list, first: int, items: list[Item]):
        import ray

        self.actors, self.index, self.attempt = actors, first, 0
        self.items = ray.put(items)
        for item in items:  # the batch object holds them now (staged refs, or copies of heap pixels)
            item.pixels = None
        self.ref = self.actors[self.index].call.remote(self.items)

    def result(self) -> list[Item]:
        import ray

        while True:
            try:
                return ray.get(self.ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):
                self.attempt += 1
                if self.attempt >= CALL_ATTEMPTS:
                    raise
                time.sleep(min(2.0, 0.25 * (self.attempt - 1)))  # time for Ray to restart it or notice the loss
                self.index = (self.index + 1) % len(self.actors)
                self.ref = self.actors[self.index].call.remote(self.items)


_LOADED: dict[str, Step] = {}  # per worker process: the in-task shared step, loaded once, used by later tasks


def in_task_step(step: Step) -> Step:
    """This worker's loaded copy of a shared step (`encoders=0`). Every task brings its own unloaded copy of the
    job; the first one with a given configuration is set up and kept for the tasks this worker runs later."""
    key = f"{type(step).__qualname__}:{sorted(step.__getstate__().items())!r}"
    if key not in _LOADED:
        step.setup()
        _trim_heap()
        _LOADED.clear()  # one job's model at a time per worker
        _LOADED[key] = step
    return _LOADED[key]


def pick_encoder(task_id: int, node: str, actor_nodes: list[str | None]) -> int:
    """Encoder index for a task: one on the task's own node when any (spread by task id), else task_id mod E."""
    local = [i for i, n in enumerate(actor_nodes) if n == node]
    return local[task_id % len(local)] if local else task_id % len(actor_nodes)
