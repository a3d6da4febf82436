"""`vtl-pipeline inspect --verify`: check every shard of a folder against its index.

One streaming pass per shard: the bytes are hashed as the tar is parsed, and each sample is checked and then
dropped, so memory stays flat whatever the shard size (only the set of keys, for the uniqueness check, grows with
the number of samples). Every mismatch becomes a `Problem` naming the shard, the key and what is wrong.
"""
from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infra import storage
from manifests.schema import KEY_RE
from pipeline.contract.checked import ShardError, read_errors_checked
from pipeline.contract.record import record_problem
from pipeline.contract.shards import (
    DURATION_MISMATCH,
    ERRORS,
    FEATURE_DTYPE,
    MEMBERS,
    META_FIELDS,
    SHARD_SUFFIX,
    Sample,
    decode_sample,
    duration_mismatch_of,
    iter_tar_members,
)

CHUNK = 1 << 20


@dataclass(frozen=True)
class Problem:
    """One mismatch. `code` is a short snake_case word (e.g. `sha256_mismatch`), `detail` says what was found."""

    code: str
    detail: str
    shard: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = ":".join(x for x in (self.shard, self.key) if x) or "index"
        return f"{where}: {self.code}: {self.detail}"


@dataclass
class VerifyResult:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    shards_checked: int = 0
    samples_checked: int = 0
    duration_mismatch: int = 0
    """Samples whose meta.json flags a duration that disagrees with the decoded length (a warning, not a problem:
    the shards are intact; build-qa --on-duration-mismatch decides what becomes of them)."""

    @property
    def ok(self) -> bool:
        return not self.problems


class _HashingReader:
    """A read-only stream that hashes and counts every byte that passes through it."""

    def __init__(self, f):
        self._f = f
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.sha256.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def check_sample(sample: Sample, num_frames: int | None, dim: int | None) -> list[tuple[str, str]]:
    """(code, detail) for everything in one sample that breaks the shard contract or disagrees with the index."""
    out: list[tuple[str, str]] = []
    meta, feats = sample.meta, sample.features
    if not isinstance(meta, dict):
        return [("meta_invalid", "meta.json is not an object")]
    if not KEY_RE.match(sample.key):
        out.append(("bad_key", f"key {sample.key!r} breaks the key rule [A-Za-z0-9_-]+"))
    if meta.get("key") != sample.key:
        out.append(("meta_key_mismatch", f"meta.json says key {meta.get('key')!r}"))
    missing = [f for f in META_FIELDS if f not in meta]
    if missing:
        out.append(("meta_fields_missing", ", ".join(missing)))
    if feats.dtype != FEATURE_DTYPE:
        out.append(("feature_dtype", f"{feats.dtype}, expected {np.dtype(FEATURE_DTYPE)}"))
    if feats.ndim != 2:
        return out + [("feature_shape", f"shape {feats.shape}, expected (N, D)")]
    rows, cols = feats.shape
    expected_rows = 1 if meta.get("kind") == "image" else num_frames
    if expected_rows is not None and rows != expected_rows:
        out.append(("feature_shape", f"{rows} rows, expected {expected_rows} ({meta.get('kind')})"))
    if dim is not None and cols != dim:
        out.append(("feature_dim", f"dimension {cols}, index says {dim}"))
    indices = meta.get("frame_indices")
    if meta.get("kind") == "video" and isinstance(indices, list) and len(indices) != rows:
        out.append(("frame_indices_length", f"{len(indices)} frame indices for {rows} feature rows"))
    if feats.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(feats)))
        if bad:
            out.append(("non_finite", f"{bad} NaN/Inf values in features"))
    if sample.conversation is not None and (why := record_problem(sample.conversation)):
        out.append(("conversation_invalid", why))
    return out


def _verify_shard(path: str, entry: dict, index: dict, seen: dict[str, str], result: VerifyResult,
                  on_sample: Callable[[Sample], None] | None) -> None:
    name, count, last_key = entry["name"], 0, None
    problems = result.problems
    with storage.open(path, "rb") as f:
        reader = _HashingReader(f)
        try:
            for members in iter_tar_members(reader):
                key = last_key = members["__key__"]
                count += 1
                if key in seen:
                    problems.append(Problem("duplicate_key", f"also in {seen[key]}", name, key))
                seen.setdefault(key, name)
                unknown = sorted(set(members) - {"__key__", *MEMBERS})
                if unknown:
                    result.warnings.append(f"{name}:{key}: unknown members {', '.join(unknown)}")
                try:
                    sample = decode_sample(members)
                except (ValueError, KeyError, TypeError, EOFError, OSError) as e:   # numpy or json refusing the bytes
                    problems.append(Problem("unparsable_member", str(e), name, key))
                    continue
                problems.extend(Problem(code, detail, name, key)
                                for code, detail in check_sample(sample, index.get("num_frames"), index.get("dim")))
                result.samples_checked += 1
                result.duration_mismatch += duration_mismatch_of(sample.meta) is not None
                if on_sample is not None:
                    on_sample(sample)
        except (tarfile.TarError, OSError, EOFError) as e:
            after = f" after sample {last_key}" if last_key else ""
            problems.append(Problem("unreadable_shard", f"tar stream broken{after}: {e}", name))
        reader.drain()
    if reader.bytes != entry.get("bytes"):
        problems.append(Problem("size_mismatch", f"{reader.bytes} bytes, index says {entry.get('bytes')}", name))
    if reader.sha256.hexdigest() != entry.get("sha256"):
        problems.append(Problem("sha256_mismatch", f"sha256 {reader.sha256.hexdigest()[:16]}…, index says "
                                                   f"{str(entry.get('sha256'))[:16]}…", name))
    if count != entry.get("samples"):
        problems.append(Problem("count_mismatch", f"{count} samples, index says {entry.get('samples')}", name))
    result.shards_checked += 1


def _check_folder(shard_dir: str, names: list[str], index: dict, result: VerifyResult) -> None:
    listed = {s["name"] for s in index["shards"]}
    for name in names:
        if name.endswith(SHARD_SUFFIX) and name not in listed:
            result.problems.append(Problem("extra_shard", "shard file not listed in index.json", name))
        elif name.endswith(".tmp"):
            result.warnings.append(f"{name}: leftover temporary file of an interrupted write")
    totals = index.get("totals", {})
    if totals.get("samples") != sum(s["samples"] for s in index["shards"]):
        result.problems.append(Problem("totals_mismatch", f"totals.samples {totals.get('samples')} is not the sum of "
                                                          f"the shards' samples"))
    try:
        errors = len(read_errors_checked(storage.join(shard_dir, ERRORS)))
    except ShardError as exc:
        result.problems.append(Problem("errors_unreadable", str(exc)))
        return
    if "errors" in totals and totals["errors"] != errors:
        result.problems.append(Problem("errors_count_mismatch",
                                       f"index says {totals['errors']} errors, {ERRORS} holds {errors}"))


def verify(shard_dir: str | Path, index: dict, on_sample: Callable[[Sample], None] | None = None) -> VerifyResult:
    """Check every shard of `shard_dir` against `index` (as read by pipeline.contract.shards.read_index).

    `on_sample` sees every sample that decodes, so a caller can gather statistics in the same pass.
    """
    shard_dir = storage.resolve(shard_dir)
    names = storage.listdir(shard_dir)  # one listing: on an object store, not one request per shard
    result = VerifyResult()
    _check_folder(shard_dir, names, index, result)
    on_disk = set(names)  # a set: 100k shards looked up in a list cost a minute
    seen: dict[str, str] = {}
    for entry in index["shards"]:
        if entry["name"] not in on_disk:
            result.problems.append(Problem("missing_shard", "listed in index.json but not on disk", entry["name"]))
            continue
        _verify_shard(storage.join(shard_dir, entry["name"]), entry, index, seen, result, on_sample)
    if result.duration_mismatch:
        result.warnings.append(f"{result.duration_mismatch} sample(s) flagged {DURATION_MISMATCH}: their annotated "
                               "duration disagrees with the decoded length of their media (meta.json)")
    return result
