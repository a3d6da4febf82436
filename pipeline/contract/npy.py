"""Loading `.npy` arrays without trusting their header: the declared shape × itemsize must match the bytes that are
actually there, checked before numpy allocates anything.

numpy's own reader allocates the array the header declares and only then reads the data, so a 128-byte file whose
header claims (10**6, 10**6) float16 asks for ~2 TB before failing. Arrays of object dtype are refused (nothing is
ever unpickled). Used by the shard decoder (`features.npy` members) and by import-vtimellm (`{id}.npy` files).
"""
from __future__ import annotations

import io
import math
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format


class NpyError(ValueError):
    """A `.npy` that cannot be what it says: bad magic or header, object dtype, or a size that does not match."""


def read_header(fp: BinaryIO, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header at the stream's position; the stream is left at the start of the data."""
    try:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(fp)
        else:
            raise NpyError(f"{what}: unsupported .npy version {version}")
    except NpyError:
        raise
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as exc:
        raise NpyError(f"{what}: not a readable .npy ({exc})") from None
    if dtype.hasobject:
        raise NpyError(f"{what}: object arrays are refused (read with allow_pickle=False: nothing is unpickled)")
    return tuple(int(n) for n in shape), dtype


def _check_size(shape: tuple[int, ...], dtype: np.dtype, have: int, what: str) -> None:
    need = math.prod(shape) * dtype.itemsize
    if need != have:
        raise NpyError(f"{what}: .npy header declares shape {shape} {dtype} ({need} bytes) but {have} bytes follow "
                       "it (damaged or forged file)")


def load_npy_bytes(data: bytes, what: str = "features.npy") -> np.ndarray:
    """An array from `.npy` bytes, refused (NpyError) before any allocation when the header lies about the size."""
    fp = io.BytesIO(data)
    shape, dtype = read_header(fp, what)
    _check_size(shape, dtype, len(data) - fp.tell(), what)
    return np.load(io.BytesIO(data), allow_pickle=False)
