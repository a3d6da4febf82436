"""Local temporary folders of a download (under $VTL_SPOOL_DIR, else the system temp folder), and their cleanup.

Each folder is named `vtl-download-{pid}-{what}-<random suffix>` after the process that made it (the driver, or the Ray worker
running a task). A run killed with -9 cannot remove its own, so every start (`clean_spool`, on the driver and at the
start of each Ray task) removes the folders of processes that no longer exist, and leaves those of live ones alone:
two downloads into different folders may share one machine. `commit` puts a finished local file at its location
without a second local copy, so everything temporary of a run lives in these folders or beside a local target.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile

from infra import storage

PREFIX = "vtl-download-"
_OWNED = re.compile(rf"^{PREFIX}(\d+)-")


def spool_folder(what: str) -> str:
    """A fresh temporary folder owned by this process (the caller removes it)."""
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{what}-", dir=storage.spool_dir())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_spool() -> list[str]:
    """Remove the spool folders of processes that are gone; the names removed."""
    root = storage.spool_dir()
    try:
        names = os.listdir(root)
    except OSError:
        return []
    removed = []
    for name in names:
        m = _OWNED.match(name)
        if m is None or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def commit(local: str, location: str) -> None:
    """A finished local file at `location`, whole or not at all: a local target through a temporary name beside it
    (removed by the next start when killed), an object in one PUT straight from `local`."""
    if storage.is_remote(location):
        fs, path = storage.filesystem(location)
        fs.put_file(local, path)
    else:
        storage.upload(local, location)
