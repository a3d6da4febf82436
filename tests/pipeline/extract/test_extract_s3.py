"""extract with everything on a local S3 server (moto): manifest, media and shards as s3:// URLs, in-process and on
Ray, a killed run resumed, and bad storage input stopped before any work with one line."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.extract import assert_exact, bad_rows, config, good_rows, make_media, upload_media, write_rows
from support.storage import read_only_user, s3_env

from infra import storage
from manifests.schema import ManifestRow
from pipeline.contract.shards import read_index
from pipeline.extract.job import run_extract


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    return make_media(tmp_path_factory.mktemp("media"))


def s3_rows(media: dict[str, Path], urls: dict[str, str], bucket: str) -> list[ManifestRow]:
    """The extract tests' good and bad rows, with every media path replaced by its s3:// URL."""
    by_path = {str(p): urls[name] for name, p in media.items()}
    rows = good_rows(media) + bad_rows(media, Path("/nowhere"))
    return [ManifestRow(**{**r.__dict__, "media": by_path.get(r.media, f"{bucket}/media/{Path(r.media).name}")})
            for r in rows]


def s3_manifest(rows: list[ManifestRow], tmp_path: Path, url: str) -> str:
    storage.upload(write_rows(rows, tmp_path / "manifest.parquet"), url)
    return url


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


def test_manifest_extract_inspect_on_s3(s3, media, tmp_path, monkeypatch):
    """manifest, media and shards on s3://: same samples as a local run, verify passes; the spool is cleaned up."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    monkeypatch.setenv("VTL_SPOOL_DIR", str(tmp_path / "spool"))
    (tmp_path / "spool").mkdir()
    rows = s3_rows(media, upload_media(media, f"{s3}/media"), s3)
    manifest = s3_manifest(rows, tmp_path, f"{s3}/manifests/toy.parquet")
    res = CliRunner().invoke(app, ["extract", "--manifest", manifest, "--out", f"{s3}/features", "--executor",
                                   "local", "--tasks", "3", "--samples-per-shard", "2", "--clip-model",
                                   "tiny-random", "--no-progress"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert not list((tmp_path / "spool").iterdir()), "spooled media removed after each task"
    assert not Path("s3:").exists(), "nothing written to a local ./s3: folder"
    samples, errors = assert_exact(f"{s3}/features", rows)
    assert {e.key: e.reason for e in errors}["missing"] == "missing_file"
    assert set(samples) == {"whole60", "whole150", "win150", "whole37", "image"}
    local = run_extract(config(write_rows(good_rows(media), tmp_path / "local.parquet"), tmp_path / "local",
                               executor="local", tasks=1))
    assert local.samples == 5
    from pipeline.contract.shards import iter_samples

    for s in iter_samples(tmp_path / "local"):
        assert np.array_equal(s.features, samples[s.key].features), s.key
    res = CliRunner().invoke(app, ["inspect", f"{s3}/features", "--verify"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert storage.read_json(f"{s3}/features/run_config.json")["config"]["out"] == f"{s3}/features"


@pytest.mark.ray
def test_extract_on_ray_to_s3(s3, media, tmp_path):
    import ray

    rows = s3_rows(media, upload_media(media, f"{s3}/media"), s3)
    manifest = s3_manifest(rows, tmp_path, f"{s3}/manifest.parquet")
    # address="local": a new Ray of our own (never another run's cluster); its workers inherit the AWS_* variables
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_extract(config(manifest, f"{s3}/features", executor="ray", tasks=3, samples_per_shard=1))
    finally:
        ray.shutdown()
    assert not summary.failed and summary.samples == 5
    assert_exact(f"{s3}/features", rows)
    from pipeline.inspect.verify import verify

    assert verify(f"{s3}/features", read_index(f"{s3}/features")).ok


def test_killed_run_on_s3_resumes_exactly(s3, media, tmp_path):
    """kill -9 of the driver with shards on S3, leftovers of an unfinished task, a rerun: every row exactly once."""
    urls = upload_media(media, f"{s3}/media")
    rows = [r for r in s3_rows(media, urls, s3) if r.kind == "video"][:4]
    rows = [ManifestRow(**{**r.__dict__, "key": f"{r.key}_{i}"}) for i in range(3) for r in rows]
    manifest = s3_manifest(rows, tmp_path, f"{s3}/manifest.parquet")
    out = f"{s3}/features"
    proc = subprocess.Popen(_cli("extract", "--manifest", manifest, "--out", out, "--executor", "local", "--tasks",
                                 "5", "--samples-per-shard", "1", "--clip-model", "tiny-random", "--no-progress"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.time() + 180
    while not storage.exists(f"{out}/tasks/task-00001.done.json"):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "first tasks did not finish in time"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not storage.exists(f"{out}/index.json")
    storage.write_bytes_atomic(f"{out}/task-00004-000007.tar", b"stale shard of an unfinished task")
    summary = run_extract(config(manifest, out, executor="local", tasks=5, samples_per_shard=1))
    assert summary.tasks_skipped >= 2 and summary.tasks_run + summary.tasks_skipped == 5
    samples, errors = assert_exact(out, rows)
    assert len(samples) + len(errors) == len(rows)
    assert not storage.exists(f"{out}/task-00004-000007.tar")
    from pipeline.inspect.verify import verify

    assert verify(out, read_index(out)).ok


def test_bad_storage_stops_before_work_with_one_line(s3, s3_server, media, tmp_path):
    from moto.core.authorization import enable_iam_authentication

    manifest = str(write_rows(good_rows(media)[:1], tmp_path / "manifest.parquet"))
    no_creds = {k: v for k, v in s3_env(s3_server).items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    reader = s3_env(s3_server, **read_only_user(s3_server, s3.removeprefix("s3://")))
    cases = [
        (s3_env(s3_server), "s3://no-such-bucket-vtl/features", "does not exist"),
        (no_creds, f"{s3}/features", "no credentials"),
        (s3_env("http://127.0.0.1:9"), f"{s3}/features", "cannot reach the storage endpoint"),
        (reader, f"{s3}/features", "permission denied"),
        (s3_env(s3_server), "hdfs://nn/features", "hdfs:// is not supported"),
    ]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with enable_iam_authentication():  # only the read-only user's keys are valid while this holds
        procs = [subprocess.Popen(_cli("extract", "--manifest", manifest, "--out", out, "--executor", "local",
                                       "--clip-model", "tiny-random", "--no-progress"),
                                  env={**clean, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for env, out, _ in cases]
        results = [p.communicate(timeout=120) for p in procs]
    for (_, out, message), proc, (stdout, stderr) in zip(cases, procs, results):
        assert proc.returncode == 2, (out, stdout, stderr[-2000:])
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (out, stderr[-2000:])
    assert storage.listdir(f"{s3}/features") == [] and storage.listdir(f"{s3}/features/tasks") == []


def test_a_second_run_on_a_busy_s3_out_is_refused(s3, media, tmp_path, monkeypatch):
    """The --out lock on an object store (issue 15 item 4): the lock object is created with a conditional PUT
    (If-None-Match, which moto honours), so a second extract on the same prefix, in another process, is refused in
    one line while the first holds it; a lock whose holder is gone (dead pid here, no heartbeat from elsewhere) is
    taken over, and a finished run removes its lock."""
    import json
    import socket

    from pipeline.extract import lock

    manifest = str(write_rows(good_rows(media)[:1], tmp_path / "manifest.parquet"))
    out = f"{s3}/features"
    lock_url = f"{out}/{lock.LOCK}"
    cmd = _cli("extract", "--manifest", manifest, "--out", out, "--executor", "local", "--tasks", "1",
               "--clip-model", "tiny-random", "--no-progress")
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.2)
    with lock.run_lock(out):  # the first run, in this process
        holder = json.loads(storage.read_bytes(lock_url))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        time.sleep(0.6)
        assert json.loads(storage.read_bytes(lock_url))["heartbeat"] > holder["heartbeat"], "the holder beats"
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "being written by another extract run" in lines[0] and f"pid {os.getpid()}" in lines[0]
    assert not storage.exists(lock_url) and not storage.exists(f"{out}/index.json")

    fresh = {"host": "elsewhere", "pid": 1, "started": "now", "heartbeat": time.time()}
    storage.write_bytes_atomic(lock_url, json.dumps(fresh).encode())
    with pytest.raises(lock.RunLocked, match="host elsewhere"):
        with lock.run_lock(out):
            pass
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for stale in ({**fresh, "heartbeat": time.time() - lock.STALE_S - 1},
                  {"host": socket.gethostname(), "pid": gone.pid, "started": "before", "heartbeat": time.time()}):
        storage.write_bytes_atomic(lock_url, json.dumps(stale).encode())
        with lock.run_lock(out):
            assert json.loads(storage.read_bytes(lock_url))["pid"] == os.getpid()
    assert run_extract(config(manifest, out, executor="local", tasks=1)).samples == 1
    assert storage.exists(f"{out}/index.json") and not storage.exists(lock_url)
