"""`run_task` hands each row's payload to `stage` as soon as that row's CPU steps are done, before the batch goes to
the shared step: the Ray executor stages pixels into the object store there, so a task holds one video's pixels."""
from __future__ import annotations

import numpy as np

from pipeline.extract.executors import Job, Resolved, run_task
from pipeline.extract.steps import Step
from pipeline.extract.tasks import Task


class _Pixels(Step):
    name = "pixels"

    def process(self, item):
        item.pixels = np.full((100, 4), len(item.key), np.float32)
        return item


class _Encoder(Step):
    name = "encode"
    shared = True

    def __init__(self, log):
        self.log = log

    def __call__(self, items):
        self.log.append(("encode", [i.key for i in items]))
        for i in items:
            i.features, i.pixels = i.pixels[:, :2], None
        return items


def test_each_row_is_staged_before_its_batch_is_sent():
    log, held = [], []
    rows = [{"key": k * (n + 1), "kind": "video"} for n, k in enumerate("abcde")]
    job = Job([_Pixels(), _Encoder(log)], batch_frames=200, on_task_start=lambda t: None,
              on_task_done=lambda t, r: log.append(("done", r[-1]["encoder_bytes"])))

    def stage(items):
        assert len(items) == 1 and items[0].pixels is not None
        log.append(("stage", items[0].key))
        held.append(items[0].pixels)
        items[0].pixels = ("staged", len(held) - 1)  # what a Ray ref stands for

    def call(items):
        assert all(isinstance(i.pixels, tuple) for i in items)  # every row of the batch staged already
        for i in items:
            i.pixels = held[i.pixels[1]]
        return Resolved(job.shared(items))

    stats = run_task(job, Task(0, rows), call, lambda s: None, stage=stage)
    assert [e for e in log if e[0] != "done"] == [
        ("stage", "a"), ("stage", "bb"), ("encode", ["a", "bb"]), ("stage", "ccc"), ("stage", "dddd"),
        ("encode", ["ccc", "dddd"]), ("stage", "eeeee"), ("encode", ["eeeee"])]
    assert stats.items == 5
    assert log[-1] == ("done", 5 * 100 * 4 * 4)  # bytes sent are counted before staging
