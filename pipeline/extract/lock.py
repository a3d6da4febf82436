"""One extract run per output folder at a time (issue: two runs on one --out both "succeeded" with every error twice).

The run holds `OUT/.extract.lock`; how the lock is taken, kept alive on an object store and lost is infra.lock's
(shared with build-qa and vtl-train). The timings are read from this module at each call, so they can be set here.
"""
from __future__ import annotations

from contextlib import contextmanager

from infra import lock as _lock
from infra.lock import LeaseLost, RunLocked

LOCK = ".extract.lock"
HEARTBEAT_S = _lock.HEARTBEAT_S
"""How often the holder of an object-store lock rewrites its heartbeat."""
STALE_S = _lock.STALE_S
"""An object-store lock from another host with no heartbeat for this long is taken over; a holder that could not
beat for this long stops."""

__all__ = ["LOCK", "HEARTBEAT_S", "STALE_S", "LeaseLost", "RunLocked", "run_lock"]


@contextmanager
def run_lock(out_dir: str):
    """Hold the output folder's lock for the duration of a run (local folder or object-store prefix)."""
    with _lock.run_lock(out_dir, LOCK, "extract", heartbeat_s=HEARTBEAT_S, stale_s=STALE_S) as lease:
        yield lease
