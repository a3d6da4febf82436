"""Where extract's encoder runs: actors with GPUs, inside the decode tasks without (`--encoders 0`), loaded once per
task worker however many tasks that worker runs."""
from __future__ import annotations

import copy

import pytest

from pipeline.extract import ray_encoders
from pipeline.extract.config import ExtractError
from pipeline.extract.encoder_plan import encoder_placement
from pipeline.extract.steps import Step


class _Model(Step):
    name = "encode"
    shared = True

    def __init__(self, tag: str):
        self.tag, self.loads = tag, 0

    def setup(self):
        self.loads += 1

    def process(self, item):
        return item

    def __getstate__(self):  # what travels with the job: the configuration, never the loaded state
        return {"tag": self.tag, "loads": 0}


def test_default_is_actors_with_gpus_and_in_task_without():
    assert encoder_placement(None, use_gpu=True) == 1
    assert encoder_placement(None, use_gpu=False) == 0
    assert encoder_placement(3, use_gpu=False) == 3 and encoder_placement(2, use_gpu=True) == 2
    with pytest.raises(ExtractError, match="--encoders 0 runs the encoder inside the CPU decode tasks"):
        encoder_placement(0, use_gpu=True)


def test_negative_encoders_is_refused():
    from support.extract import config

    with pytest.raises(ValueError, match="--encoders must be ≥ 0"):
        config("m.parquet", "out", encoders=-1)


def test_in_task_step_loads_once_per_worker_and_again_for_another_config(monkeypatch):
    monkeypatch.setattr(ray_encoders, "_LOADED", {})
    first = _Model("a")
    tasks = [copy.copy(first) for _ in range(3)]  # each task deserialises its own unloaded copy of the job
    for t in tasks:
        t.loads = 0
    loaded = [ray_encoders.in_task_step(t) for t in tasks]
    assert all(step is loaded[0] for step in loaded) and loaded[0].loads == 1
    other = ray_encoders.in_task_step(_Model("b"))  # a different configuration: its own load, the old one released
    assert other is not loaded[0] and other.loads == 1 and len(ray_encoders._LOADED) == 1


GIB = 2**30


def test_the_plan_is_made_once_from_the_options_and_the_cluster():
    import dataclasses

    from support.extract import TINY, config

    from pipeline.extract.clip import cpu_memory_bytes
    from pipeline.extract.encoder_plan import Cluster, plan_encoders

    nodes = ({"CPU": 2, "memory": 8 * GIB},)
    cpu = plan_encoders(config("m.parquet", "out"), Cluster(gpus=0, nodes=nodes))
    need = cpu_memory_bytes(TINY, 256)  # --batch-size's default lands in the plan
    assert (cpu.where, cpu.actors, cpu.batch_size, cpu.copy_bytes, cpu.ask_memory) == ("in_task", 0, 256, need, True)
    assert cpu.task_options == {"num_cpus": 1, "memory": need} and cpu.pixel_dtype == "float32"
    gpu = plan_encoders(config("m.parquet", "out", batch_size=64), Cluster(gpus=4, nodes=nodes))
    assert (gpu.where, gpu.actors, gpu.batch_size, gpu.copy_bytes, gpu.pixel_dtype) == ("actors", 1, 64, None, "float16")
    assert gpu.actor_options == {"num_gpus": 1, "num_cpus": 1} and gpu.task_options == {"num_cpus": 1}
    actors = plan_encoders(config("m.parquet", "out", encoders=2), Cluster(gpus=0, nodes=nodes))
    assert actors.actor_options == {"num_cpus": 0, "memory": need} and actors.task_options == {"num_cpus": 1}
    local = plan_encoders(config("m.parquet", "out", executor="local", encoders=3), Cluster(gpus=0))
    assert (local.where, local.actors, local.copy_bytes, local.ask_memory) == ("in_process", 0, need, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cpu.copy_bytes = 0  # nobody changes the plan after it is made


def test_memory_is_not_asked_where_nodes_report_none_nor_checked_with_nothing_to_run():
    from support.extract import config

    from pipeline.extract.encoder_plan import Cluster, plan_encoders

    bare = plan_encoders(config("m.parquet", "out"), Cluster(gpus=0, nodes=({"CPU": 2},)))
    assert not bare.ask_memory and bare.task_options == {"num_cpus": 1} and "no memory resource" in bare.notes[0]
    tiny = Cluster(gpus=0, nodes=({"CPU": 2, "memory": 1},))  # holds no copy: refused when there is work...
    with pytest.raises(Exception, match="one CPU copy of the encoder needs"):
        plan_encoders(config("m.parquet", "out"), tiny)
    idle = plan_encoders(config("m.parquet", "out"), tiny, bound_memory=False)  # ...not when every task is done
    assert idle.notes == () and not idle.ask_memory


def test_in_process_executor_loads_each_step_once():
    from pipeline.extract.encoder_plan import EncoderPlan
    from pipeline.extract.executors import InProcessExecutor, Job
    from pipeline.extract.tasks import Task

    model = _Model("a")
    job = Job([model], batch_frames=100, on_task_start=lambda t: None, on_task_done=lambda t, r: None)
    executor = InProcessExecutor()
    executor.setup(job, EncoderPlan("in_process", 0, False, 100))
    executor.run(job, [Task(0, [{"key": "k", "kind": "image"}]), Task(1, [])], lambda stats: None)
    assert model.loads == 1
