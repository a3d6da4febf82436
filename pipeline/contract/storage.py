"""Reading and writing our small files (JSON records) safely: a temporary name, then an atomic rename.

Every command's bookkeeping files (index, run config, plans, markers, metrics) go through here, so the way a file is
committed is decided in one place: written under a temporary name, fsynced, renamed, and the folder fsynced, so that
after a power loss a file is either absent or whole. JSON is standard JSON: NaN and ±Infinity become null
(`json_text`), since most readers other than Python's refuse them.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path


def finite(obj):
    """`obj` with every non-finite float (NaN, ±Infinity) replaced by None, in dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_text(obj, indent: int | None = None) -> str:
    """Standard JSON (no NaN/Infinity literals) of `obj`; non-JSON values are written as their str()."""
    return json.dumps(finite(obj), indent=indent, ensure_ascii=False, default=str, allow_nan=False)


def fsync_file(f) -> None:
    """Flush an open file and fsync it, so a rename that follows never publishes a file whose bytes are not on disk."""
    f.flush()
    os.fsync(f.fileno())


def fsync_dir(path: str | Path) -> None:
    """fsync a folder so that a rename inside it survives a power loss (not possible on every platform)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | Path, obj) -> Path:
    """Write `obj` as indented JSON under a temporary name, then rename it into place (readers never see half)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(json_text(obj, indent=2) + "\n")
            fsync_file(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a kill leaves no temporary file behind
        raise
    fsync_dir(path.parent)
    return path
