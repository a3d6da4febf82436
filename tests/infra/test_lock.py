"""infra.lock (issue 32 items 5 and 6): the object-store lock's heartbeat outlives an endpoint outage, a holder whose
lease is lost stops, and the shared lock keeps one writer per folder for every kind of run.

The outage is real: a moto server of this test's own is stopped (connections refused, botocore's
EndpointConnectionError, which is not an OSError) and started again on the same port (moto keeps its objects in
the process, so the bucket and the lock object are still there)."""
from __future__ import annotations

import json
import logging
import os
import time
import uuid

import pytest
from support.storage import free_port, make_bucket, s3_env

from infra import lock, storage


@pytest.fixture
def own_server(monkeypatch):
    """(start, stop, s3:// bucket URL) of a moto server this test may take down and bring back on one port."""
    pytest.importorskip("moto.server")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    servers = []

    def start():
        servers.append(ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False))
        servers[-1].start()

    def stop():
        servers[-1].stop()

    start()
    endpoint = f"http://127.0.0.1:{port}"
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    # Few, quick retries: an outage is seen within a second rather than botocore's default backoff.
    for key, value in s3_env(endpoint, AWS_MAX_ATTEMPTS="1", AWS_RETRY_MODE="standard").items():
        monkeypatch.setenv(key, value)
    bucket = f"vtl-lock-{uuid.uuid4().hex[:8]}"
    make_bucket(endpoint, bucket)
    yield start, stop, f"s3://{bucket}"
    stop()


def _beat(url: str) -> float:
    return json.loads(storage.read_bytes(url))["heartbeat"]


def test_the_heartbeat_survives_an_outage_shorter_than_the_stale_time(own_server):
    start, stop, bucket = own_server
    out = f"{bucket}/run"
    url = f"{out}/.x.lock"
    with lock.run_lock(out, ".x.lock", "test", heartbeat_s=0.2, stale_s=30) as lease:
        time.sleep(0.5)
        stop()  # beats now fail with EndpointConnectionError for ~2 s
        time.sleep(2.0)
        start()
        before = time.time()
        deadline = before + 20
        while _beat(url) < before:  # the same thread beats again once the endpoint is back
            assert time.time() < deadline, "the heartbeat did not resume after the outage"
            time.sleep(0.1)
        assert lease.lost is None
    assert not storage.exists(url)


def test_a_holder_that_cannot_beat_for_the_stale_time_stops_writing(own_server):
    start, stop, bucket = own_server
    out = f"{bucket}/run"
    writes = 0
    with pytest.raises(lock.LeaseLost, match="could not be renewed for 1 s"):
        with lock.run_lock(out, ".x.lock", "test", heartbeat_s=0.2, stale_s=1.0):
            stop()
            deadline = time.time() + 60
            while time.time() < deadline:  # the run's writing loop: interrupted once the lease is lost
                writes += 1
                time.sleep(0.05)
    assert 0 < writes < 60 / 0.05
    start()


def test_a_holder_whose_lock_was_taken_over_stops_writing(s3):
    out = f"{s3}/run"
    url = f"{out}/.x.lock"
    t0 = time.perf_counter()
    with pytest.raises(lock.LeaseLost, match="taken over by host elsewhere"):
        with lock.run_lock(out, ".x.lock", "test", heartbeat_s=0.2, stale_s=30):
            other = {"host": "elsewhere", "pid": 1, "token": "theirs", "started": "now", "heartbeat": time.time()}
            storage.write_bytes_atomic(url, json.dumps(other).encode())
            time.sleep(30)  # a blocking call in the run: woken, not waited out
    assert time.perf_counter() - t0 < 10
    assert json.loads(storage.read_bytes(url))["token"] == "theirs"  # the new holder's lock is left alone


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_second_holder_is_refused_in_one_line(where, tmp_path, request):
    out = str(tmp_path / "run") if where == "local" else request.getfixturevalue("s3") + "/run"
    with lock.run_lock(out, ".train.lock", "vtl-train"):
        with pytest.raises(lock.RunLocked, match="being written by another vtl-train run") as err:
            with lock.run_lock(out, ".train.lock", "vtl-train"):
                pass
        assert "\n" not in str(err.value) and f"pid {os.getpid()}" in str(err.value)
    with lock.run_lock(out, ".train.lock", "vtl-train"):  # released: taken again
        pass
