"""vtl-train as two "nodes" on this machine: two separate torchrun launches (`--nnodes 2 --node_rank 0|1`, one
process each, gloo on CPU) streaming the same s3:// shards from the local S3 server, sharing one `--out` folder as
nodes share a network filesystem, each with its own node-local token cache.

Checked: the ranks train on disjoint samples, each optimizer step takes the global batch over both nodes, rank 0
alone writes the checkpoint, and after a kill -9 of one node the other stops on its own (gloo sees the peer's socket
close) and `--resume` on both nodes finishes the run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.storage import free_port, s3_env
from support.training import write_training_shards

from infra import storage
from train.config import resolve_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
ROOT = Path(__file__).resolve().parents[2]
MICRO, GLOBAL = 2, 8


def upload_folder(local: Path, prefix: str) -> str:
    """A local shard folder copied under an object-store prefix, index.json last (as a writer commits it)."""
    names = sorted(p.name for p in local.iterdir() if p.is_file())
    for name in sorted(names, key=lambda n: n == "index.json"):
        storage.upload(local / name, storage.join(prefix, name))
    return prefix


_LAUNCHED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_stray_nodes():
    """A failed assertion must not leave launchers or workers running on the shared machine."""
    yield
    while _LAUNCHED:
        proc = _LAUNCHED.pop()
        if proc.poll() is None:
            _kill_node(proc)


@pytest.fixture
def shards(s3, tmp_path) -> str:
    return upload_folder(write_training_shards(tmp_path / "local-shards", n=48, stage=1, per_shard=8, rows=1),
                         f"{s3}/train")


def node_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(DS_ACCELERATOR="cpu", PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false",
               VTL_SPOOL_DIR=str(tmp_path))
    return {**env, **s3_env(os.environ["AWS_ENDPOINT_URL"])}


def start_nodes(tmp_path: Path, shards: str, out: Path, steps: int, *extra: str) -> list[subprocess.Popen]:
    """Two torchrun launches, as two machines would start them."""
    port, procs = free_port(), []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "train.cli",
               "--stage", "1", "--shards", shards, "--llm", "tiny-random", "--out", str(out),
               "--micro-batch", str(MICRO), "--global-batch", str(GLOBAL), "--max-steps", str(steps), "--zero", "2",
               "--num-workers", "1", "--shuffle-buffer", "8", "--log-keys", "--no-progress",
               "--no-gradient-checkpointing", "--token-cache", str(tmp_path / f"node{node}-token-cache"), *extra]
        log = open(tmp_path / f"node{node}.{len(list(tmp_path.glob(f'node{node}.*.log')))}.log", "w")
        procs.append(subprocess.Popen(cmd, env=node_env(tmp_path), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    _LAUNCHED.extend(procs)
    return procs


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.time() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            for q in procs:
                _kill_node(q)
            raise AssertionError(f"a node did not exit within {timeout:.0f} s (hung)") from None
    return codes


def _kill_node(proc: subprocess.Popen) -> None:
    """kill -9 of the launcher and everything under it: the whole "machine" (torchrun puts its workers in their own
    process groups, so killing its group alone would leave them running)."""
    import psutil

    try:
        tree = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def logs(tmp_path: Path, node: int) -> str:
    return "".join(p.read_text() for p in sorted(tmp_path.glob(f"node{node}.*.log")))


def keys_by_step(out: Path, rank: int) -> dict[int, list[str]]:
    steps: dict[int, list[str]] = {}
    for line in (out / f"keys.rank{rank}.jsonl").read_text().splitlines():
        row = json.loads(line)
        steps.setdefault(row["step"], []).extend(row["keys"])
    return steps


def assert_split_and_batch(out: Path, steps: int) -> None:
    """Disjoint samples per step, micro × accumulation per rank, the global batch over both ranks."""
    per_rank = [keys_by_step(out, r) for r in (0, 1)]
    one_node = resolve_config(1, shards="s", llm="tiny-random", out="o", micro_batch=MICRO, global_batch=GLOBAL,
                              world_size=1)
    plan = json.loads((out / "run_config.json").read_text())["plan"]
    assert (plan["world_size"], plan["accumulation"], one_node.accumulation) == (2, GLOBAL // (2 * MICRO),
                                                                                 GLOBAL // MICRO)
    for step in range(1, steps + 1):
        a, b = per_rank[0][step], per_rank[1][step]
        assert len(a) == len(b) == GLOBAL // 2 and not set(a) & set(b), step
        assert len(a) + len(b) == one_node.micro_batch * one_node.accumulation == GLOBAL
    assert sorted(per_rank[0]) == sorted(per_rank[1]) == list(range(1, steps + 1))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps + 1)) and rows[-1]["samples"] == steps * GLOBAL


def assert_one_checkpoint(tmp_path: Path, out: Path, steps: int) -> None:
    assert json.loads((out / "vtl_checkpoint.json").read_text())["stage"] == 1
    assert "checkpoint in" in logs(tmp_path, 0) and "checkpoint in" not in logs(tmp_path, 1)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "no temporary files left by a race"
    tag = f"step{steps:08d}"
    assert [p.name for p in (out / "engine").iterdir() if p.is_dir()] == [tag]
    assert (out / "engine" / "latest").read_text().strip() == tag
    assert sorted(p.name for p in (out / "engine" / tag).glob("trainer_rank*.json")) == \
        ["trainer_rank0.json", "trainer_rank1.json"]
    assert not Path(ROOT / "s3:").exists()


def test_two_nodes_stream_s3_shards(shards, tmp_path):
    """The smallest two-node run (4 steps), in the default suite: ~45 s on 2 shared cores (load ~8)."""
    out = tmp_path / "ckpt"
    codes = wait_all(start_nodes(tmp_path, shards, out, 4), timeout=240)
    assert codes == [0, 0], logs(tmp_path, 0)[-3000:] + logs(tmp_path, 1)[-3000:]
    assert_split_and_batch(out, 4)
    assert_one_checkpoint(tmp_path, out, 4)
    assert list((tmp_path / "node0-token-cache").glob("*.npz")) and list((tmp_path / "node1-token-cache").glob("*.npz"))


@pytest.mark.slow  # two two-node launches of 12 steps: ~135 s on 2 shared cores (load ~10)
def test_a_killed_node_stops_the_other_and_both_resume(shards, tmp_path):
    """kill -9 of node 1 after an engine save: node 0 must stop by itself (not hang), then --resume on both
    finishes, with each rank's key record complete (flushed every step, so it survives the kill up to the save)."""
    out, steps = tmp_path / "ckpt", 12
    procs = start_nodes(tmp_path, shards, out, steps, "--save-every", "2")
    deadline = time.time() + 240
    while not (out / "engine" / "latest").exists():
        assert all(p.poll() is None for p in procs), logs(tmp_path, 0)[-3000:] + logs(tmp_path, 1)[-3000:]
        assert time.time() < deadline, "no engine save in time"
        time.sleep(0.02)
    _kill_node(procs[1])  # node 1 dies after a save
    t0 = time.time()
    code = wait_all(procs[:1], timeout=120)[0]
    stopped_after = time.time() - t0
    assert code != 0, "node 0 must fail when its peer is gone, not finish alone"
    assert not (out / "vtl_checkpoint.json").exists(), "the run finished before the kill"
    saved = (out / "engine" / "latest").read_text().strip()
    assert (out / "engine" / saved / "trainer_rank1.json").is_file()
    codes = wait_all(start_nodes(tmp_path, shards, out, steps, "--save-every", "2", "--resume"), timeout=300)
    assert codes == [0, 0], logs(tmp_path, 0)[-3000:] + logs(tmp_path, 1)[-3000:]
    assert "resuming from" in logs(tmp_path, 0)
    assert_split_and_batch(out, steps)
    assert_one_checkpoint(tmp_path, out, steps)
    print(f"node 0 stopped {stopped_after:.1f} s after node 1 was killed")
