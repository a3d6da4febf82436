"""The local Ray that `vtl-pipeline extract` starts: it listens on 127.0.0.1 only and dies with its driver (issue 15
items 12 and 16). The driver runs as a subprocess (it must start its own Ray, and be killed)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from support.extract import write_rows

from manifests.schema import ManifestRow
from pipeline.synth.media import frame_counter_video

pytestmark = pytest.mark.ray
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


def _family(pid: int) -> dict[int, psutil.Process]:
    try:
        return {p.pid: p for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return {}


def _alive_attr(procs, attr: str) -> list:
    """`p.name()` / `p.cmdline()` of the processes still there (a Ray worker may exit between listing and asking)."""
    out = []
    for p in procs:
        try:
            out.append(getattr(p, attr)())
        except psutil.Error:
            continue
    return out


def _listening(procs) -> set[tuple[str, str]]:
    found = set()
    for p in procs:
        try:
            found |= {(p.name(), c.laddr.ip) for c in p.net_connections(kind="inet") if c.status == "LISTEN"}
        except psutil.Error:
            continue
    return found


@pytest.mark.timeout(240)
def test_kill_9_of_the_driver_leaves_no_ray_process_and_ray_listens_on_loopback(tmp_path):
    """Before: after kill -9 of the driver, ray::DashboardAgent and ray::RuntimeEnvAgent lived on (20 s and more),
    and gcs_server, raylet and every worker listened on all interfaces."""
    rows = [ManifestRow(key=f"v{i}", dataset="synth", kind="video",
                        media=str(frame_counter_video(tmp_path / f"v{i}.mp4", 40 + i, 10.0))) for i in range(4)]
    manifest = write_rows(rows, tmp_path / "m.parquet")
    driver = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "extract", "--manifest", str(manifest), "--out",
                               str(tmp_path / "out"), "--tasks", "4", "--num-cpus", "2", "--clip-model",
                               "tiny-random", "--no-progress"], env={**os.environ, "RAY_AUTH_MODE": "disabled"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    family: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and driver.poll() is None:
        family.update(_family(driver.pid))
        names = set(_alive_attr(family.values(), "name"))
        if {"raylet", "gcs_server"} <= names and any(n.startswith("ray::_") for n in names):
            break  # Ray is up and a task or the encoder is running
        time.sleep(0.3)
    assert driver.poll() is None, "the extract finished before it could be killed"
    family.update(_family(driver.pid))
    listening = _listening(family.values())
    assert listening and all(ip in LOOPBACK for _, ip in listening), listening
    assert any("ray_watchdog" in " ".join(cmd) for cmd in _alive_attr(family.values(), "cmdline"))
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    killed = time.monotonic()
    _, alive = psutil.wait_procs(list(family.values()), timeout=10)
    survivors = [(p.pid, p.name()) for p in alive]
    for p in alive:
        p.kill()
    assert not survivors, f"alive {time.monotonic() - killed:.0f} s after kill -9 of the driver: {survivors}"
