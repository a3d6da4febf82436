"""Reading a shard folder and holding it to its `index.json`: what build-qa, vtl-eval and inspect read through.

`iter_samples` (pipeline.contract.shards) trusts the files: a shard cut at a header boundary or overwritten with
zeros reads as a shorter shard, and the reader would go on with fewer samples than the index lists. Here:

- `load_index` refuses an `index.json` that is not JSON or not of the index's shape, in one line naming the file;
- `check_files` compares every listed shard with the index before anything is read (present, a regular file, the
  size the index records);
- `iter_checked` yields each sample as a `Sample`, or as a `BadSample` when its members do not decode (a `.npy`
  header claiming a huge shape, meta.json that is not JSON): a bad item is data, counted by the caller. A shard
  whose tar structure is broken, or that holds another number of samples than the index says, raises `ShardError`.
"""
from __future__ import annotations

import json
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from infra import storage
from pipeline.contract.shards import (
    INDEX,
    SHARD_SUFFIX,
    ErrorRecord,
    Sample,
    decode_sample,
    iter_tar_members,
    read_index,
    require_regular_file,
)

VERIFY_HINT = "`vtl-pipeline inspect --verify` checks it in full"


class ShardError(ValueError):
    """A shard folder that is not what its index says: one line naming the file, for the CLIs to print."""


@dataclass(frozen=True)
class BadSample:
    """A sample whose members are present but do not decode; `reason` is a snake_case word."""

    key: str
    reason: str
    detail: str


def _check_entry(i: int, entry, path: Path) -> None:
    if not isinstance(entry, dict):
        raise ShardError(f"{path}: shards[{i}] is not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not name.endswith(SHARD_SUFFIX) or Path(name).name != name or \
            name.startswith("."):
        raise ShardError(f"{path}: shards[{i}].name {name!r} is not a shard file name in this folder")
    for field in ("samples", "bytes"):
        value = entry.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ShardError(f"{path}: shards[{i}] ({name}) has {field} {value!r}, expected a count ≥ 0")


def load_index(shard_dir: str | Path) -> dict:
    """`read_index`, plus one-line refusals of an index that is not JSON or not of the index's shape."""
    path = storage.join(shard_dir, INDEX)
    try:
        index = read_index(shard_dir)
    except UnicodeDecodeError:
        raise ShardError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ShardError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except AttributeError:  # valid JSON, but not an object
        raise ShardError(f"{path}: expected a JSON object") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise ShardError(f"{path}: cannot read ({exc.strerror})") from None
    shards = index.get("shards")
    if not isinstance(shards, list):
        raise ShardError(f"{path}: `shards` must be a list, got {type(shards).__name__}")
    for i, entry in enumerate(shards):
        _check_entry(i, entry, path)
    if not isinstance(index.get("totals", {}), dict):
        raise ShardError(f"{path}: `totals` must be an object")
    return index


def check_files(shard_dir: str | Path, index: dict) -> None:
    """Every shard the index lists is present, a regular file, and of the size the index records."""
    for entry in index["shards"]:
        path = storage.join(shard_dir, entry["name"])
        if not storage.exists(path):
            raise ShardError(f"{path}: listed in {INDEX} but missing")
        if not storage.is_remote(path):
            require_regular_file(path)
        size = storage.size(path)
        if size != entry["bytes"]:
            raise ShardError(f"{path}: {size} bytes, {INDEX} says {entry['bytes']} (a cut, grown or damaged "
                             f"shard; {VERIFY_HINT})")


_BROKEN = (tarfile.TarError, OSError, EOFError, zlib.error, UnicodeDecodeError)


def _decode(members: dict) -> Sample | BadSample:
    try:
        return decode_sample(members)
    except (ValueError, KeyError, TypeError, EOFError, RecursionError) as exc:
        reason = "unreadable_features" if "npy" in str(exc) else "unreadable_sample"
        return BadSample(members["__key__"], reason, str(exc).splitlines()[0][:300])


def iter_shard_checked(path: str, entry: dict) -> Iterator[Sample | BadSample]:
    """The samples of one shard; ShardError when its tar is broken or it holds another count than `entry`."""
    count = 0
    try:
        for members in iter_tar_members(path):
            count += 1
            yield _decode(members)
    except _BROKEN as exc:
        raise ShardError(f"{path}: unreadable tar after {count} samples ({type(exc).__name__}: {exc}; "
                         f"{VERIFY_HINT})") from None
    if count != entry["samples"]:
        raise ShardError(f"{path}: holds {count} samples, {INDEX} says {entry['samples']} (damaged shard; "
                         f"{VERIFY_HINT})")


def iter_checked(shard_dir: str | Path, index: dict | None = None) -> Iterator[Sample | BadSample]:
    """Every sample of a shard folder in index order, held to the index (see the module docstring)."""
    index = index if index is not None else load_index(shard_dir)
    check_files(shard_dir, index)
    for entry in index["shards"]:
        yield from iter_shard_checked(storage.join(shard_dir, entry["name"]), entry)


def iter_good(shard_dir: str | Path, index: dict | None = None) -> Iterator[Sample]:
    """`iter_checked` for readers that cannot skip a sample (evaluation): a bad sample is a ShardError."""
    for item in iter_checked(shard_dir, index):
        if isinstance(item, BadSample):
            raise ShardError(f"{shard_dir}: sample {item.key}: {item.reason}: {item.detail}")
        yield item


def read_errors_checked(path: str | Path) -> list[ErrorRecord]:
    """`errors.jsonl` records; a malformed line is a ShardError naming the line."""
    path = str(path)
    if not storage.exists(path):
        return []
    out = []
    for lineno, line in enumerate(storage.read_bytes(path).decode(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(ErrorRecord(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise ShardError(f"{path}:{lineno}: not an error record ({exc})") from None
    return out
