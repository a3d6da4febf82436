"""Where DeepSpeed builds its C++ ops (CPU Adam): one folder per environment.

torch.utils.cpp_extension builds into `TORCH_EXTENSIONS_DIR`, by default `~/.cache/torch_extensions/py3X_cpu`,
shared by every virtualenv of that Python. Two environments with different torch builds then overwrite each other's
op and each trainer start recompiles it (about a minute and 1.5 GB). Keying the folder to the interpreter prefix and
the torch version gives each environment its own; a folder the user chose is left alone.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

ENV_VAR = "TORCH_EXTENSIONS_DIR"


def keyed_extensions_dir(torch_version: str, prefix: str = sys.prefix, home: Path | None = None) -> Path:
    """`~/.cache/torch_extensions/vtl-<12 hex of sha256(prefix, torch version)>`."""
    digest = hashlib.sha256(f"{prefix}\0{torch_version}".encode()).hexdigest()[:12]
    return (home or Path.home()) / ".cache" / "torch_extensions" / f"vtl-{digest}"


def set_extensions_dir(torch_version: str) -> str:
    """Set `TORCH_EXTENSIONS_DIR` for this environment unless it is set already; returns the folder in use."""
    if not os.environ.get(ENV_VAR):
        os.environ[ENV_VAR] = str(keyed_extensions_dir(torch_version))
    return os.environ[ENV_VAR]
