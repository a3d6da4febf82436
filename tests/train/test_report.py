"""`vtl-train --report-to`: wandb (offline) and MLflow (file store) record the numbers of metrics.jsonl, step by step;
a reporter whose package is missing stops the run with one line before any work (train.report)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.training import write_training_shards

from train.config import resolve_config

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_training_shards(tmp_path_factory.mktemp("report") / "s1", n=8, stage=1, per_shard=8, rows=2)


def _train(shards: Path, out: Path, report_to: str) -> list[dict]:
    from train.loop import run

    run(resolve_config(1, shards=str(shards), out=str(out), llm="tiny-random", micro_batch=2, global_batch=4,
                       max_steps=3, zero=2, gradient_checkpointing=False, num_workers=0, shuffle_buffer=4,
                       progress=False, world_size=1, report_to=report_to))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    return rows


def _expected(rows: list[dict]) -> dict:
    """{train/<key>: [(step, value), ...]} for every number of metrics.jsonl."""
    keys = [k for k in rows[0] if k != "step"]
    return {f"train/{k}": [(r["step"], float(r[k])) for r in rows] for k in keys}


def _same(got: list, want: list) -> bool:
    return [s for s, _ in got] == [s for s, _ in want] and all(
        v == pytest.approx(w, rel=1e-9) for (_, v), (_, w) in zip(got, want))


def test_mlflow_file_store_records_metrics_jsonl(shards, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run-mlflow"
    rows = _train(shards, out, "mlflow")
    client = mlflow.MlflowClient((out / "mlruns").resolve().as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("vtl").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["report_to"] == "mlflow"
    for key, want in _expected(rows).items():
        got = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert _same(got, want), (key, got, want)
    assert not (out / "tensorboard").exists()


def _wandb_records(log: Path) -> list[bytes]:
    """The records of a `.wandb` log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of chunks, each
    with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) (LevelDB's log format)."""
    import struct

    data, block, pos, records, pending = log.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(pending)
    return records


def _wandb_history(run_dir: Path) -> list[dict]:
    """The history rows of an offline wandb run, read from its .wandb log."""
    from wandb.proto import wandb_internal_pb2

    [log] = run_dir.glob("run-*.wandb")
    rows = []
    for data in _wandb_records(log):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def _wandb_config(run_dir: Path) -> dict:
    """The run's config, from the run record of its .wandb log."""
    from wandb.proto import wandb_internal_pb2

    [log] = run_dir.glob("run-*.wandb")
    for data in _wandb_records(log):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "run":
            return {item.key: json.loads(item.value_json) for item in record.run.config.update}
    raise AssertionError("no run record")


def test_wandb_offline_records_metrics_jsonl(shards, tmp_path, monkeypatch):
    for var in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run-wandb"
    rows = _train(shards, out, "wandb")
    [run_dir] = (out / "wandb").glob("offline-run-*")
    history = _wandb_history(run_dir)
    got: dict = {}
    for h in history:
        for key, value in h.items():
            if key.startswith("train/"):
                got.setdefault(key, []).append((h["_step"], float(value)))
    want = _expected(rows)
    assert sorted(got) == sorted(want) and all(_same(got[k], want[k]) for k in want), (got, want)
    assert _wandb_config(run_dir)["report_to"] == "wandb"


def _child_env() -> dict:
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)  # an in-process run sets these; the child is its own single-process run
    return env


def test_a_missing_reporter_package_is_one_line(shards, tmp_path):
    """The CLI in a process where `import mlflow` cannot find the package."""
    code = ("import sys; sys.modules['mlflow'] = None; import importlib.util as u; "
            "u.find_spec = (lambda f: (lambda n, *a: None if n == 'mlflow' else f(n, *a)))(u.find_spec); "
            "from train.cli import main; sys.argv = ['vtl-train'] + sys.argv[1:]; main()")
    done = subprocess.run([sys.executable, "-c", code, "--stage", "1", "--shards", str(shards), "--llm", "tiny-random",
                           "--out", str(tmp_path / "o"), "--report-to", "mlflow"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=_child_env())
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == ("error: --report-to mlflow needs the mlflow package: pip install "
                                                    "mlflow (or choose another --report-to)")
    assert not (tmp_path / "o" / "metrics.jsonl").exists()
