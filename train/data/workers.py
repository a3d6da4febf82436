"""DataLoader workers that do not outlive their trainer.

A worker of a process killed with SIGKILL is left with ppid 1 and, as found after kill -9 of vtl-train, never
exits: its queue's feeder thread blocks writing batches into a pipe nobody reads (~550 MB each, for as long as
the machine runs). On Linux each worker asks the kernel for SIGKILL when its parent dies (prctl
PR_SET_PDEATHSIG); where that is not available, a daemon thread polls the parent's pid every second.
"""
from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, _worker_id: int = 0) -> None:
    """`worker_init_fn` (via functools.partial with the trainer's pid): exit as soon as `parent` is gone."""
    if not _pdeathsig():
        threading.Thread(target=_watch, args=(parent,), daemon=True, name="vtl-parent-watch").start()
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _pdeathsig() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)
