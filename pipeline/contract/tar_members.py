"""Reading a shard's tar: members grouped by sample key in file order (the WebDataset layout), from a local file, an
object-store location or an open stream, refusing anything but a regular file. pipeline.contract.shards decodes the
groups into samples and re-exports these names."""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from infra import storage


def iter_tar_members(path: str | Path | BinaryIO) -> Iterator[dict]:
    """Group the members of one shard by key, in file order (the WebDataset layout), values as bytes.

    `path` is a storage location (local or `s3://…`) or an open binary stream (read front to back once), e.g. one
    that hashes what passes through.
    """
    import tarfile

    if not hasattr(path, "read"):
        if not storage.is_remote(str(path)):
            require_regular_file(path)
        with storage.open(path, "rb") as f:
            yield from iter_tar_members(f)
        return
    with tarfile.open(fileobj=path, mode="r|") as tar:
        yield from group_by_key((info.name, tar.extractfile(info).read()) for info in tar if info.isfile())


def require_regular_file(path: str | Path) -> None:
    """Refuse anything but a regular file before opening it: a FIFO or device in place of a shard would block forever."""
    import stat

    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path}: not a regular file (a FIFO, device or folder where a shard should be)")


def member_name(name: str) -> tuple[str, str]:
    """A tar member's name → (sample key, member): the key is everything before the first dot (WebDataset's rule)."""
    key, _, member = name.partition(".")
    return key, member


def group_by_key(named: Iterable[tuple[str, object]]) -> Iterator[dict]:
    """(tar member name, value) pairs in file order → one dict per sample: {"__key__": key, member: value, …}."""
    current: dict | None = None
    for name, value in named:
        key, member = member_name(name)
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key}
        current[member] = value
    if current is not None:
        yield current
