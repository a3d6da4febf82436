"""One extract run per output folder at a time (issue: two runs on one --out both "succeeded" with every error twice).

The run holds `OUT/.extract.lock`, created exclusively (O_CREAT | O_EXCL) and naming its holder (host, pid, start).
Another run on the same folder is refused with one line naming the holder. A lock whose process is gone (kill -9, a
crash) on this host is stale and taken over, so the resume-after-kill path keeps working; a lock held from another
host cannot be checked and is reported with the command that removes it. Object stores have no exclusive create
through fsspec, so an `s3://`/`gs://` --out is not locked (docs/reliability.md says so).
"""
from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager

from pipeline.contract import storage

LOCK = ".extract.lock"


class RunLocked(RuntimeError):
    """Another extract run holds the output folder."""


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot be checked from here
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    return True


def _holder(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}  # half-written by a run killed between create and write: stale


def _acquire(path: str) -> dict:
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                      time.gmtime())}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder and _alive(holder):
                raise RunLocked(f"{os.path.dirname(path)} is being written by another extract run (host "
                                f"{holder.get('host')}, pid {holder.get('pid')}, since {holder.get('started')}); "
                                f"wait for it or use another --out (if no run is active: rm {path})") from None
            os.unlink(path)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return me
    raise RunLocked(f"{path}: could not take the run lock (other runs keep starting on this folder)")


@contextmanager
def run_lock(out_dir: str):
    """Hold the output folder's lock for the duration of a run (a no-op on object stores)."""
    if storage.is_remote(out_dir):
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
