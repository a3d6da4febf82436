"""Data-parallel `vtl-eval`: the split, rank files and merge rules by hand, and two gloo processes under torchrun
on CPU whose merged predictions equal a one-process run's, query for query, also after a kill -9 and a rerun."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.evaluation import eval_shards, many_videos, tiny_checkpoint
from support.storage import free_port
from typer.testing import CliRunner

from eval.cli import app
from eval.parallel import (
    World,
    check_settings,
    count_answered,
    cut_torn_tail,
    merge,
    owner,
    read_answered,
    world_from_env,
)
from eval.parallel_run import _slices

ROOT = Path(__file__).resolve().parents[2]


def test_world_from_env():
    assert world_from_env({}) == World(0, 1, 0)
    w = world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (w.rank, w.size, w.local_rank) == (3, 4, 1)
    with pytest.raises(ValueError, match="not in 0..WORLD_SIZE-1"):
        world_from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="must be integers"):
        world_from_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_split_is_by_sample_round_robin():
    assert [owner(s, 3) for s in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert {owner(s, 1) for s in range(5)} == {0}


class _It:
    def __init__(self, key):
        self.key = key


def test_slices_keep_samples_whole():
    items = [_It(k) for k in "aabbbcd"]
    assert ["".join(i.key for i in s) for s in _slices(items, 2)] == ["aa", "bbb", "cd"]
    assert ["".join(i.key for i in s) for s in _slices(items, 100)] == ["aabbbcd"]
    assert _slices([], 4) == []


def _line(key, qid, answer="x"):
    return {"key": key, "id": qid, "answer": answer}


def test_torn_line_is_cut_and_not_read(tmp_path):
    path = tmp_path / "predictions.rank0.jsonl"
    path.write_text(json.dumps(_line("a", "a_q0")) + "\n" + json.dumps(_line("a", "a_q1")) + "\n" + '{"key": "b", "i')
    assert [x["id"] for x in read_answered(path)] == ["a_q0", "a_q1"]
    assert count_answered(tmp_path) == 2
    cut_torn_tail(path)
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 2
    cut_torn_tail(path)  # nothing torn: unchanged
    assert len(path.read_text().splitlines()) == 2


def test_merge_orders_across_rank_files_and_names_the_missing(tmp_path):
    (tmp_path / "predictions.rank0.jsonl").write_text(
        "".join(json.dumps(_line(k, q, f"{k}{q}")) + "\n" for k, q in [("a", "0"), ("c", "0")]))
    (tmp_path / "predictions.rank1.jsonl").write_text(
        "".join(json.dumps(_line(k, q, f"{k}{q}")) + "\n" for k, q in [("b", "0"), ("b", "1"), ("a", "0")]))
    order = [("a", "0"), ("b", "0"), ("b", "1"), ("c", "0")]
    assert [x["answer"] for x in merge(tmp_path, order)] == ["a0", "b0", "b1", "c0"]
    with pytest.raises(ValueError, match="1 queries have no answer .* sample d, query 0"):
        merge(tmp_path, [*order, ("d", "0")])


def test_other_settings_are_refused(tmp_path):
    check_settings(tmp_path, {"max_new_tokens": 8})  # no file yet: fine
    (tmp_path / "predictions.ranks.json").write_text(json.dumps({"max_new_tokens": 8, "llm": None}))
    check_settings(tmp_path, {"max_new_tokens": 8, "llm": None})
    with pytest.raises(ValueError, match=r"other settings \(max_new_tokens\)"):
        check_settings(tmp_path, {"max_new_tokens": 9, "llm": None})


# --- two processes under torchrun ---------------------------------------------------------------------------------

ARGS = ("--batch-size", "2", "--max-new-tokens", "24", "--device", "cpu")


def _torchrun(ckpt: Path, shards: Path, out: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "eval.cli", "grounding",
           "--checkpoint", str(ckpt), "--shards", str(shards), "--out", str(out), *ARGS]
    with open(log, "w") as f:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    text = log.read_text()
    assert rc == 0, text[-4000:]
    return text


@pytest.mark.slow
def test_two_processes_equal_one_and_a_killed_run_resumes(tmp_path, one_thread):
    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    shards = eval_shards(tmp_path / "shards", "grounding", videos=many_videos(40))
    one = tmp_path / "one"
    res = CliRunner().invoke(app, ["grounding", "--checkpoint", str(ckpt), "--shards", str(shards), "--out",
                                   str(one), *ARGS])
    assert res.exit_code == 0, res.output
    expected = (one / "predictions.jsonl").read_text()
    total = len(expected.splitlines())
    assert total == 80

    two = tmp_path / "two"
    log = _finish(_torchrun(ckpt, shards, two, tmp_path / "two.log"), tmp_path / "two.log")
    assert (two / "predictions.jsonl").read_text() == expected  # query for query, byte for byte
    rank_lines = [read_answered(two / f"predictions.rank{r}.jsonl") for r in (0, 1)]
    assert [len(x) for x in rank_lines] == [40, 40]  # samples alternate: 2 queries each, 20 samples a rank
    assert {x["key"] for x in rank_lines[0]}.isdisjoint({x["key"] for x in rank_lines[1]})
    assert json.loads((two / "metrics.json").read_text()) == json.loads((one / "metrics.json").read_text())
    assert "rank 0/2: answered 40" in log and "rank 1/2: answered 40" in log

    # kill -9 the whole launch once answers are being written, then rerun the same command
    cut = tmp_path / "cut"
    proc = _torchrun(ckpt, shards, cut, tmp_path / "cut.log")
    deadline = time.monotonic() + 600
    while (count_answered(cut) if cut.exists() else 0) == 0:
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "cut.log").read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = count_answered(cut)
    assert 0 < before < total and not (cut / "predictions.jsonl").exists()
    log = _finish(_torchrun(ckpt, shards, cut, tmp_path / "cut2.log"), tmp_path / "cut2.log")
    assert (cut / "predictions.jsonl").read_text() == expected
    redone = sum(int(x.split("answered ")[1].split()[0]) for x in log.splitlines() if "queries in this run" in x)
    assert redone < total  # the rerun skipped what was answered before the kill
    merged = [read_answered(cut / f"predictions.rank{r}.jsonl") for r in (0, 1)]
    assert sum(len(x) for x in merged) == total  # no query answered twice
