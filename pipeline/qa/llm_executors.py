"""Where `build-qa --generate` runs its LLM step (pipeline.qa.generate.DialogueLLM): in this process (`local`), or on
Ray actors that each hold one copy of the LLM (`ray`; one GPU per actor when the cluster has GPUs). Both take a
list of request batches and return their generations in the same order, so prompts, validation and output are the
same whichever runs them. Ray is imported here only, inside the Ray executor.
"""
from __future__ import annotations

from typing import Iterator

from infra.local_ray import connect, get_cause
from pipeline.qa.generate import DialogueLLM, Generation, Request


class LocalLLMExecutor:
    """The step in this process: batches run one after another."""

    def __init__(self, step: DialogueLLM):
        self.step = step

    def setup(self) -> None:
        self.step.setup()

    def __call__(self, batches: list[list[Request]]) -> Iterator[list[Generation]]:
        for batch in batches:
            yield self.step(batch)

    def shutdown(self) -> None:
        self.step.model = None


class _LLMActor:
    def __init__(self, step: DialogueLLM):
        self.step = step

    def setup(self) -> bool:
        self.step.setup()
        return True

    def generate(self, batch: list[Request]) -> list[Generation]:
        return self.step(batch)


class RayLLMExecutor:
    """`actors` Ray actors holding the LLM; batch i goes to actor i mod actors, results come back in batch order.
    Ray as extract reaches it (infra.local_ray.connect): `address=None` starts Ray on this machine, on 127.0.0.1
    only and dying with this process (or reuses an initialised one); otherwise joins that cluster."""

    def __init__(self, step: DialogueLLM, actors: int = 1, address: str | None = None):
        self.step, self.n, self.address = step, actors, address
        self.actors: list = []
        self.watchdog = None

    def setup(self) -> None:
        import ray

        self.watchdog = connect(self.address) or self.watchdog
        gpus = int(ray.cluster_resources().get("GPU", 0))
        resources = dict(self.step.resources) if gpus else {"num_cpus": 1}
        actor_cls = ray.remote(_LLMActor).options(**resources, max_restarts=1, max_task_retries=1)
        self.actors = [actor_cls.remote(self.step) for _ in range(self.n)]
        get_cause([a.setup.remote() for a in self.actors])  # a model that does not load: its own error, at once

    def __call__(self, batches: list[list[Request]]) -> Iterator[list[Generation]]:
        import ray

        refs = [self.actors[i % len(self.actors)].generate.remote(b) for i, b in enumerate(batches)]
        for ref in refs:
            yield ray.get(ref)

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []


def make_executor(cfg, step: DialogueLLM):
    if cfg.executor == "ray":
        return RayLLMExecutor(step, cfg.llm_actors)
    return LocalLLMExecutor(step)


def generate_samples(samples, cfg, stats, budget):
    """build-qa's hook: the generated stage-3 samples of `samples` (see pipeline.qa.generate.generated), with the
    LLM loaded on the chosen executor for the length of the run. `budget` (a TokenBudget) rejects dialogues over
    --max-tokens; build-qa passes one made with --tokenizer, else with the LLM's own tokenizer."""
    from pipeline.qa.generate import Sampling, generated, settings
    from pipeline.qa.llm_source import model_source

    model_source(str(cfg.llm), "--llm")  # a hub name no hub can give: one line now, before any actor starts
    step = DialogueLLM(str(cfg.llm), Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens), cfg.seed,
                       cfg.llm_engine)
    executor = make_executor(cfg, step)
    executor.setup()
    try:
        yield from generated(samples, cfg, stats, executor, budget.positions if budget else None, settings(cfg))
    finally:
        executor.shutdown()
