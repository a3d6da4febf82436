"""Where extract's encoder runs: actors with GPUs, inside the decode tasks without (`--encoders 0`), loaded once per
task worker however many tasks that worker runs."""
from __future__ import annotations

import copy

import pytest

from pipeline.extract import ray_encoders
from pipeline.extract.job import ExtractError, encoder_placement
from pipeline.extract.steps import Step


class _Model(Step):
    name = "encode"
    shared = True

    def __init__(self, tag: str):
        self.tag, self.loads = tag, 0

    def setup(self):
        self.loads += 1

    def __getstate__(self):  # what travels with the job: the configuration, never the loaded state
        return {"tag": self.tag, "loads": 0}


def test_default_is_actors_with_gpus_and_in_task_without():
    assert encoder_placement(None, use_gpu=True) == 1
    assert encoder_placement(None, use_gpu=False) == 0
    assert encoder_placement(3, use_gpu=False) == 3 and encoder_placement(2, use_gpu=True) == 2
    with pytest.raises(ExtractError, match="--encoders 0 runs the encoder inside the CPU decode tasks"):
        encoder_placement(0, use_gpu=True)


def test_negative_encoders_is_refused():
    from _extract_helpers import config

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
