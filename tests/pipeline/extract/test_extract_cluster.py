"""extract on a 3-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: separate raylets and object stores),
joined with `--address`: relative paths from another folder than the nodes', a worker node removed mid-run, the
encoder's node killed mid-run, and the clear errors of a cluster we cannot join."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.extract import assert_exact, config, good_rows, make_media, write_rows

from infra.local_ray import ClusterJoinError, check_address
from manifests.schema import ManifestRow
from pipeline.extract.clip import ClipConfig
from pipeline.extract.encoder_plan import EncoderPlan
from pipeline.extract.job import run_extract

pytestmark = pytest.mark.ray
STORE = 150 * 2**20  # small object stores: one video's float32 pixels are 60 MB
FAST = ClipConfig(model="tiny-random", fast_resize=True)  # the cheap decode side (uint8 crops) keeps the test short


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (1 CPU, no encoder) + 2 worker nodes (1 CPU, an `encoder_slot` each), all started in `node_home`, so
    their workers run there and not in the test's folder."""
    import ray
    from ray.cluster_utils import Cluster

    home, cwd = tmp_path_factory.mktemp("node_home"), os.getcwd()
    os.chdir(home)
    try:
        c = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "object_store_memory": STORE, "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}})
        for _ in range(2):
            c.add_node(num_cpus=1, object_store_memory=STORE, resources={"encoder_slot": 1})
        c.wait_for_nodes()
    finally:
        os.chdir(cwd)
    c.home = home
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture
def encoders_off_head(monkeypatch):
    """Encoders only on the worker nodes (the head holds the GCS and the driver: removing it ends the cluster)."""
    options = EncoderPlan.actor_options.fget

    def on_workers(plan):
        return {**options(plan), "resources": {"encoder_slot": 0.01}}

    monkeypatch.setattr(EncoderPlan, "actor_options", property(on_workers))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    return make_media(tmp_path_factory.mktemp("media"))


def _rows(media, copies: int) -> list[ManifestRow]:
    return [ManifestRow(**{**r.__dict__, "key": f"{r.key}_{i}"}) for i in range(copies) for r in good_rows(media)]


def _markers(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "tasks").glob("*.done.json"))]


def _remove_when(cluster, out: Path, pick, removed: list, stop: threading.Event) -> None:
    """Once the first task marker exists (the run is under way), remove the node `pick(marker)` names."""
    while not stop.is_set() and not (done := sorted((out / "tasks").glob("*.done.json"))):
        time.sleep(0.05)
    if stop.is_set():
        return
    node = pick(json.loads(done[0].read_text()))
    cluster.remove_node(node)
    removed.append(node.node_id)


def _run_removing(cluster, cfg, out: Path, pick) -> tuple:
    stop, removed = threading.Event(), []
    killer = threading.Thread(target=_remove_when, args=(cluster, out, pick, removed, stop), daemon=True)
    killer.start()
    try:
        summary = run_extract(cfg)
    finally:
        stop.set()
        killer.join()
    assert removed, "the run ended before a node could be removed"
    return summary, removed[0]


def test_worker_node_removed_mid_run_relative_paths(cluster, encoders_off_head, media, tmp_path, monkeypatch):
    rows = _rows(media, 2)
    data = tmp_path / "data"
    data.mkdir()
    write_rows(rows, data / "manifest.parquet")
    monkeypatch.chdir(data)  # the driver's folder; the nodes run in cluster.home
    cfg = config(Path("manifest.parquet"), Path("out"), address=cluster.address, tasks=5, samples_per_shard=2,
                 encoders=2, clip=FAST)
    summary, _ = _run_removing(cluster, cfg, data / "out", lambda marker: next(iter(cluster.worker_nodes)))
    if summary.failed:  # Ray retries a task whose node died; what it could not retry, a rerun resumes
        summary = run_extract(cfg)
    assert not summary.failed and summary.samples == len(rows)
    assert_exact(data / "out", rows)
    markers = _markers(data / "out")
    assert len({m["node"] for m in markers}) >= 2, [m["node"] for m in markers]
    assert all(m["encoder_bytes"] > 0 for m in markers)
    assert not list(Path(cluster.home).rglob("*.tar")) and not (Path(cluster.home) / "out").exists()
    cluster.add_node(num_cpus=1, object_store_memory=STORE, resources={"encoder_slot": 1})  # for the next test
    cluster.wait_for_nodes()


def _encoder_node(cluster, marker: dict):
    return next(n for n in cluster.worker_nodes if n.node_id == marker["encoder_node"])


def test_losing_the_encoder_node_fails_no_task(cluster, encoders_off_head, media, tmp_path):
    rows = _rows(media, 2)
    manifest = write_rows(rows, tmp_path / "manifest.parquet")
    cfg = config(manifest, tmp_path / "out", address=cluster.address, tasks=5, samples_per_shard=2, encoders=1,
                 clip=FAST)
    summary, gone = _run_removing(cluster, cfg, tmp_path / "out", lambda marker: _encoder_node(cluster, marker))
    assert not summary.failed, summary.failed  # no rerun: the calls waited for the restarted encoder
    assert summary.samples == len(rows)
    assert_exact(tmp_path / "out", rows)
    assert all(m["encoder_node"] for m in _markers(tmp_path / "out"))
    assert gone not in {n.node_id for n in cluster.list_all_nodes()}


HEAD = """
import sys
from ray.cluster_utils import Cluster
c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20,
                                                  "include_dashboard": False})
print(c.address, flush=True)
sys.stdin.read()
c.shutdown()
"""


def test_joining_needs_a_reachable_cluster_and_its_token(tmp_path):
    with pytest.raises(ClusterJoinError, match="no Ray cluster answers at 127.0.0.1:9"):
        check_address("127.0.0.1:9", timeout=2)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0123456789abcdef0123456789abcdef"}
    head = subprocess.Popen([sys.executable, "-c", HEAD], env=env, cwd=tmp_path, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        address = head.stdout.readline().strip()
        assert address, "the token-auth head did not start"
        t0 = time.time()
        with pytest.raises(ClusterJoinError, match="uses token authentication. Set RAY_AUTH_MODE=token"):
            check_address(address)  # this process runs with RAY_AUTH_MODE=disabled (tests/conftest.py)
        assert time.time() - t0 < 15
    finally:
        head.communicate("", timeout=60)
