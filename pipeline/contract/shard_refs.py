"""Locating sample members inside shard files, so that feature bytes are read once, straight into a batch.

`iter_tar_members` (pipeline/contract/shards.py) reads every member of a sample through Python's tarfile: ~0.4 ms per sample
of three members, plus a copy of the 150 KB feature array that the trainer's data workers would then have to ship
to the training process. This module walks the tar headers itself with positional reads and, for `features.npy`,
returns a `FeatureRef` (file, byte offset, shape, dtype) instead of the bytes; `read_features_into` later copies each
array from the page cache into its slot of a batch. Small members (`conversation.json`, `meta.json`) are read as
bytes, as `iter_tar_members` does.

Headers understood: POSIX ustar (with its name prefix), pax extended headers (`path`, `size`), GNU long names; what
webdataset's TarWriter, Python's tarfile and GNU tar write. Members that are not regular files are skipped, as in
`iter_tar_members`. The `.npy` header is parsed with numpy's own header readers (a literal, never unpickled); arrays
of object dtype are refused.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from infra import storage
from pipeline.contract.shards import FEATURES, group_by_key, member_name, require_regular_file

BLOCK = 512
_FILE_TYPES = (b"0", b"\0", b"7")
_WINDOW = 1 << 15  # bytes per positional read: a sample's headers and small members usually fit in one or two


class FeatureRef(NamedTuple):
    """Where one sample's feature array lies in a shard file (the array data, after its `.npy` header)."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: str
    fortran: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


class _Reader:
    """Positional reads through a small window (few system calls, or few ranged GETs, for runs of small members).

    `fd` is a local file descriptor (os.pread), or None with `remote` an open storage file (seek + read: ranged
    reads from an object store).
    """

    def __init__(self, fd: int | None, remote=None):
        self.fd, self.remote, self.start, self.buf = fd, remote, 0, b""
        self.size = os.fstat(fd).st_size if fd is not None else remote.size

    def pread(self, n: int, pos: int) -> bytes:
        if self.fd is not None:
            return os.pread(self.fd, n, pos)
        self.remote.seek(pos)
        return self.remote.read(n)

    def read(self, pos: int, n: int) -> bytes:
        if pos < self.start or pos + n > self.start + len(self.buf):
            if n > _WINDOW:
                return self.pread(n, pos)
            self.start, self.buf = pos, self.pread(_WINDOW, pos)
        return self.buf[pos - self.start:pos - self.start + n]


def _number(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for sizes ≥ 8 GiB
        return int.from_bytes(field[1:], "big")
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def _pax(data: bytes) -> dict[str, str]:
    """Records "LEN key=value\\n" of a pax extended header (only `path` and `size` matter to us)."""
    if b" path=" not in data and b" size=" not in data:  # the usual mtime-only record of webdataset's writer
        return {}
    out, i = {}, 0
    while i < len(data) and data[i]:
        space = data.index(b" ", i)
        length = int(data[i:space])
        if length <= space - i:  # a record is at least "LEN " long; 0 would loop forever
            raise ValueError(f"pax record of length {length}")
        key, _, value = data[space + 1:i + length - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "surrogateescape")
        i += length
    return out


def _header_name(block: bytes) -> str:
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:263] == b"ustar\0" else b""
    return f"{prefix.decode('utf-8', 'surrogateescape')}/{name}" if prefix else name


_COMPRESSED = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"BZh": "bzip2", b"\xfd7zXZ": "xz"}


def _refuse_compressed(path, head: bytes) -> None:
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            raise ValueError(f"{path}: a {kind}-compressed tar; the trainer reads each sample's features at its byte "
                             f"offset, so shards must be plain tars (as vtl-pipeline writes them): decompress it")


def iter_tar_files(path: str | Path, reader: _Reader) -> Iterator[tuple[str, int, int]]:
    """(name, data offset, size) of each regular file in the tar at `path`, in file order."""
    pos, pax, longname, total = 0, {}, None, reader.size
    while True:
        if pos == total:  # a tar without the end-of-archive blocks
            return
        block = reader.read(pos, BLOCK)
        if pos == 0:
            _refuse_compressed(path, block)
        if len(block) < BLOCK:
            raise ValueError(f"{path}: truncated at byte {total} (a tar member or header ends at {pos + BLOCK})")
        if not block[0] and not any(block):  # end of archive (a header always starts with a name)
            return
        if _number(block[148:156]) != sum(block) - sum(block[148:156]) + 256:  # checksum field counted as spaces
            raise ValueError(f"{path}: bad tar header checksum at byte {pos}")
        size, kind, data = _number(block[124:136]), block[156:157], pos + BLOCK
        if size < 0 or data + size > total:  # a negative size would step back onto this header forever
            raise ValueError(f"{path}: tar header at byte {pos} declares {size} bytes; the file has {total - data} "
                             f"after it (damaged shard)")
        if kind == b"x":
            pax = _pax(reader.read(data, size))
        elif kind == b"L":
            longname = reader.read(data, size).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif kind != b"g":
            name = pax.get("path") or longname or _header_name(block)
            size = int(pax.get("size", size))
            if size < 0 or data + size > total:
                raise ValueError(f"{path}: pax header before byte {pos} declares {size} bytes (damaged shard)")
            if kind in _FILE_TYPES and not name.endswith("/"):
                yield name, data, size
            pax, longname = {}, None
        pos = data + (size + BLOCK - 1) // BLOCK * BLOCK
        if pos > total:
            raise ValueError(f"{path}: truncated at byte {total} (a tar member or header ends at {pos})")


_HEADERS: dict[bytes, tuple[int, tuple[int, ...], str, bool]] = {}


def _npy_header(path: str, head: bytes) -> tuple[int, tuple[int, ...], str, bool]:
    """(header length, shape, dtype, fortran order) of a `.npy` whose first bytes are `head` (cached by bytes)."""
    got = _HEADERS.get(head)
    if got is None:
        fp = io.BytesIO(head)
        try:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
            else:
                raise ValueError(f".npy version {version} is not supported here")
        except ValueError as e:
            raise ValueError(f"{path}: bad {FEATURES} header: {e}") from e
        if dtype.hasobject:
            raise ValueError(f"{path}: {FEATURES} of object dtype refused (it would need unpickling)")
        if len(_HEADERS) > 256:
            _HEADERS.clear()
        got = _HEADERS[head] = (fp.tell(), tuple(shape), dtype.str, bool(fortran))
    return got


def _locate(path: str, reader: _Reader, offset: int, size: int) -> FeatureRef:
    head = reader.read(offset, min(size, 12))
    if len(head) < 10 or head[:6] != b"\x93NUMPY":
        raise ValueError(f"{path}: {FEATURES} at byte {offset} is not a .npy array")
    start = 10 if head[6] == 1 else 12
    header_len = start + int.from_bytes(head[8:start], "little")
    length, shape, dtype, fortran = _npy_header(path, reader.read(offset, min(size, header_len)))
    ref = FeatureRef(path, offset + length, shape, dtype, fortran)
    if length + ref.nbytes != size:
        raise ValueError(f"{path}: {FEATURES} at byte {offset} holds {size - length} data bytes, its header "
                         f"says {ref.nbytes}")
    return ref


def iter_sample_refs(path: str | Path) -> Iterator[dict]:
    """Members of one shard grouped by key, like `iter_tar_members`, with `features.npy` as a FeatureRef.

    The shard is announced to the kernel as about to be read (POSIX_FADV_WILLNEED): read-ahead fills the page cache
    while samples wait in a shuffle buffer, so `read_features_into` later copies from memory. A shard in an object
    store (`s3://…`) is walked with ranged reads of its headers and small members; its features are fetched later,
    one ranged read per sample.
    """
    path = str(path)
    if storage.is_remote(path):
        with storage.open(path, "rb", block_size=_WINDOW, cache_type="readahead") as f:
            yield from _sample_refs(path, _Reader(None, f))
        return
    require_regular_file(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        _will_need(fd)
        yield from _sample_refs(path, _Reader(fd))
    finally:
        os.close(fd)


def _sample_refs(path: str, reader: _Reader) -> Iterator[dict]:
    return group_by_key(
        (name, _locate(path, reader, offset, size) if member_name(name)[1] == FEATURES else reader.read(offset, size))
        for name, offset, size in iter_tar_files(path, reader))


def shard_stat(path: str) -> tuple[int, int]:
    """(bytes, mtime in ns) of a shard; an object store's mtime is not kept (0): the index's sha256 names it."""
    if storage.is_remote(path):
        return storage.size(path), 0
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _will_need(fd: int) -> None:
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)


def prefetch(path: str | Path) -> None:
    """Ask the kernel to start reading the whole file into the page cache (returns before the reads finish).

    Nothing to do for a shard in an object store: its features are fetched by ranged reads when a batch needs them.
    """
    if storage.is_remote(path):
        return
    fd = os.open(str(path), os.O_RDONLY)
    try:
        _will_need(fd)
    finally:
        os.close(fd)


def read_features_into(refs: list[FeatureRef], out: np.ndarray) -> None:
    """out[i, :rows_i] = sample i's features, for out of shape (B, R, D), C-contiguous; rows past rows_i untouched.

    Arrays stored as `out`'s dtype in C order are read straight into their slot (one copy, page cache → batch);
    others go through a temporary array and numpy's cast.
    """
    fds: dict[str, int] = {}
    try:
        for i, ref in enumerate(refs):
            if len(ref.shape) != 2 or ref.shape[1] != out.shape[2] or ref.shape[0] > out.shape[1]:
                raise ValueError(f"{ref.path}: features of shape {ref.shape} do not fit a batch of {out.shape}")
            remote = storage.is_remote(ref.path)
            if ref.path not in fds and not remote:
                fds[ref.path] = os.open(ref.path, os.O_RDONLY)
            dest = out[i, :ref.shape[0]]
            direct = np.dtype(ref.dtype) == out.dtype and not ref.fortran
            raw = dest if direct else np.empty(ref.nbytes, np.uint8)
            got = _ranged_read(ref, raw) if remote else os.preadv(fds[ref.path], [memoryview(raw).cast("B")],
                                                                     ref.offset)
            if got != ref.nbytes:
                raise ValueError(f"{ref.path}: features at byte {ref.offset} are truncated ({got} of {ref.nbytes} "
                                 f"bytes)")
            if not direct:
                dest[...] = np.frombuffer(raw, ref.dtype).reshape(ref.shape, order="F" if ref.fortran else "C")
    finally:
        for fd in fds.values():
            os.close(fd)


def _ranged_read(ref: FeatureRef, raw: np.ndarray) -> int:
    """One ranged GET of a sample's feature bytes, copied into `raw`; returns the bytes received."""
    data = storage.read_bytes(ref.path, ref.offset, ref.offset + ref.nbytes)
    memoryview(raw).cast("B")[:len(data)] = data
    return len(data)
