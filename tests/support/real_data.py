"""Where the real third-party data samples are: `$VTL_REAL_DATA`, else `shared/data/real` beside the checkout (as CI
lays it out), else the development machine's `/work/shared/data/real`."""
import os
from pathlib import Path


def _find() -> Path:
    candidates = [os.environ.get("VTL_REAL_DATA"), Path(__file__).resolve().parents[3] / "shared" / "data" / "real",
                  "/work/shared/data/real"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    raise FileNotFoundError("real data samples not found: set VTL_REAL_DATA to the folder of shared/data/real")


REAL = _find()
