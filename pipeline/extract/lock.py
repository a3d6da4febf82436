"""One extract run per output folder at a time (issue: two runs on one --out both "succeeded" with every error twice).

The run holds `OUT/.extract.lock`, created exclusively and naming its holder (host, pid, start). Another run on the
same folder is refused with one line naming the holder.

Local folders: the lock file is created with O_CREAT | O_EXCL. A lock whose process is gone (kill -9, a crash) on
this host is stale and taken over, so the resume-after-kill path keeps working; a lock held from another host cannot
be checked and is reported with the command that removes it.

Object stores (`s3://`): the lock object is created with a conditional PUT (`If-None-Match: *`, s3fs's
`mode="create"`: AWS S3, MinIO and moto refuse it with 412 when the object exists). The holder rewrites its
`heartbeat` every HEARTBEAT_S seconds; a lock from another host whose heartbeat is older than STALE_S is taken over
(a driver killed with -9 on another machine), one from this host as soon as its pid is gone. Taking over a stale
lock is a delete then a conditional create: two runs taking over the same stale lock at the same instant could both
pass (S3 has no conditional delete here). A store that does not understand the conditional PUT would let a second
create overwrite the first: use one that does, or one run per prefix.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager

from infra import storage

LOCK = ".extract.lock"
HEARTBEAT_S = 30.0
"""How often the holder of an object-store lock rewrites its heartbeat."""
STALE_S = 120.0
"""An object-store lock from another host with no heartbeat for this long is taken over (hosts' clocks must agree
to well within this)."""


class RunLocked(RuntimeError):
    """Another extract run holds the output folder."""


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "heartbeat": time.time()}


def _pid_alive(holder: dict) -> bool:
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    return True


def _alive(holder: dict, remote: bool = False) -> bool:
    if holder.get("host") == socket.gethostname():
        return _pid_alive(holder)
    if not remote:
        return True  # cannot be checked from here
    beat = holder.get("heartbeat")
    return not isinstance(beat, (int, float)) or time.time() - beat < STALE_S


def _refusal(folder: str, holder: dict, lock: str) -> RunLocked:
    return RunLocked(f"{folder} is being written by another extract run (host {holder.get('host')}, pid "
                     f"{holder.get('pid')}, since {holder.get('started')}); wait for it or use another --out "
                     f"(if no run is active: rm {lock})")


def _holder(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}  # half-written by a run killed between create and write: stale


def _acquire(path: str) -> dict:
    me = _me()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder and _alive(holder):
                raise _refusal(os.path.dirname(path), holder, path) from None
            os.unlink(path)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return me
    raise RunLocked(f"{path}: could not take the run lock (other runs keep starting on this folder)")


def _remote_holder(url: str) -> dict | None:
    """The lock object's holder; None when there is no lock object, {} when it does not parse (stale)."""
    try:
        holder = json.loads(storage.read_bytes(url))
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _create(fs, path: str, url: str, data: bytes) -> None:
    """Create the object only if it does not exist (raises FileExistsError). A filesystem without a conditional
    create (its pipe_file has no `mode`) gets check-then-write: it refuses a live holder but does not close the race."""
    try:
        fs.pipe_file(path, data, mode="create")
    except (TypeError, NotImplementedError):
        if _remote_holder(url) is not None:
            raise FileExistsError(url) from None
        fs.pipe_file(path, data)


def _acquire_remote(url: str) -> dict:
    fs, path = storage.filesystem(url)
    me = _me()
    for _ in range(3):
        try:
            _create(fs, path, url, json.dumps(me).encode())
            return me
        except FileExistsError:
            holder = _remote_holder(url)
            if holder is None:
                continue  # released between our create and our read
            if holder and _alive(holder, remote=True):
                raise _refusal(storage.parent(url), holder, url) from None
            storage.remove(url)  # stale: no heartbeat for STALE_S, or its process on this host is gone
    raise RunLocked(f"{url}: could not take the run lock (other runs keep starting on this prefix)")


class _Heartbeat(threading.Thread):
    """Rewrites the lock object's heartbeat every `interval` s while the run holds it; stops if it was taken over."""

    def __init__(self, url: str, me: dict, interval: float):
        super().__init__(name="vtl-extract-lock-heartbeat", daemon=True)
        self.url, self.me, self.interval = url, me, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                holder = _remote_holder(self.url)
                if not holder or holder.get("token") != self.me["token"]:
                    return  # taken over after we stalled past STALE_S: not ours to refresh
                self.me["heartbeat"] = time.time()
                storage.write_bytes_atomic(self.url, json.dumps(self.me).encode())
            except OSError:
                continue  # a failed beat is retried; the lock goes stale only after STALE_S of them


@contextmanager
def _remote_lock(url: str):
    me = _acquire_remote(url)
    beat = _Heartbeat(url, me, HEARTBEAT_S)
    beat.start()
    try:
        yield
    finally:
        beat.stopped.set()
        beat.join()
        holder = _remote_holder(url)
        if holder and holder.get("token") == me["token"]:
            storage.remove(url)


@contextmanager
def run_lock(out_dir: str):
    """Hold the output folder's lock for the duration of a run (local folder or object-store prefix)."""
    if storage.is_remote(out_dir):
        with _remote_lock(storage.join(out_dir, LOCK)):
            yield
        return
    folder = storage.local_path(out_dir)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK)
    me = _acquire(path)
    try:
        yield
    finally:
        if _holder(path) == me:
            os.unlink(path)
