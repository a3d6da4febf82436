"""Reading and writing our small files (JSON records) safely: a temporary name, then an atomic rename.

Every command's bookkeeping files (index, run config, plans, markers, metrics) go through here, so the way a file is
committed is decided in one place.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_json_atomic(path: str | Path, obj) -> Path:
    """Write `obj` as indented JSON under a temporary name, then rename it into place (readers never see half)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)
    return path
