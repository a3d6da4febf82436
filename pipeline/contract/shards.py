"""The shard contract: what a sample holds, how shards are written and read, the index and the error records.

A shard is a WebDataset tar whose members are `{key}.features.npy` (float16 (N, D)), `{key}.meta.json` and, after
build-qa, `{key}.conversation.json`. N is the sample's feature rows: its frames × the feature spec's tokens per frame
(rows frame by frame, a frame's K rows in raster order of its pooled patch grid); it may differ between samples (the
fps rule), D is the encoder's width (index.json `dim`, `feature_spec`). Shards are written under a temporary name and renamed; `index.json` is written
last. Readers decode `.npy` with allow_pickle=False and `.json` with the json module: nothing is ever unpickled.
The writer, extract, build-qa, the trainer, inspect and the tests all import this module.
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from infra import storage
from infra.storage import fsync_file, json_text
from manifests.schema import KEY_RE, file_sha256
from pipeline.contract.npy import load_npy_bytes
from pipeline.contract.provenance import producer
from pipeline.contract.tar_members import (  # noqa: F401  (re-exported: shard readers take them from the contract)
    group_by_key,
    iter_tar_members,
    member_name,
    require_regular_file,
)

FORMAT_VERSION = 1
FEATURES = "features.npy"
META = "meta.json"
CONVERSATION = "conversation.json"
MEMBERS = (FEATURES, META, CONVERSATION)
INDEX = "index.json"
ERRORS = "errors.jsonl"
FEATURE_DTYPE = np.float16
FEATURE_DIM = 768  # D: CLIP ViT-L/14's projected embedding width (reference §4.1); the trainer's projector input
SHARD_SUFFIX = ".tar"
META_FIELDS = ("key", "dataset", "source_id", "media", "kind", "window", "duration", "fps", "num_frames",
               "frame_indices", "frame_times", "events", "caption", "encoder")
DURATION_MISMATCH = "duration_mismatch"
"""Optional meta.json field, present only when the sample's `duration` (the time base of its events and timestamps)
disagrees with the length of media behind its features beyond `timing.DURATION_TOLERANCE_S` / `_REL`:
`{"annotated": seconds, "decoded": seconds}` (pipeline.contract.timing.duration_mismatch)."""


def duration_mismatch_of(meta: dict) -> dict | None:
    """A sample's duration-mismatch flag, or None (also for a meta.json that is not an object)."""
    flag = meta.get(DURATION_MISMATCH) if isinstance(meta, dict) else None
    return flag if isinstance(flag, dict) else None


@dataclass
class Sample:
    key: str
    features: np.ndarray
    meta: dict
    conversation: dict | None = None


@dataclass(frozen=True)
class ErrorRecord:
    """A sample that did not make it into shards: which step failed and why (`reason` is a short snake_case word)."""

    key: str
    step: str
    reason: str
    detail: str = ""
    source_id: str | None = None


@dataclass
class ShardInfo:
    name: str
    samples: int
    bytes: int
    sha256: str
    keys: list[str] = field(default_factory=list, repr=False)

    def to_index(self) -> dict:
        return {"name": self.name, "samples": self.samples, "bytes": self.bytes, "sha256": self.sha256}


def check_key(key: str) -> str:
    if not KEY_RE.match(key):
        raise ValueError(f"invalid sample key {key!r}: keys are [A-Za-z0-9_-]+")
    return key


def encode_sample(sample: Sample) -> dict[str, bytes]:
    """A sample as WebDataset members (bytes), validating the contract on the way in."""
    check_key(sample.key)
    feats = np.asarray(sample.features)
    if feats.ndim != 2:
        raise ValueError(f"{sample.key}: features must be (N, D), got shape {feats.shape}")
    buf = io.BytesIO()
    np.save(buf, feats.astype(FEATURE_DTYPE, copy=False), allow_pickle=False)
    out = {"__key__": sample.key, FEATURES: buf.getvalue(),
           META: json_text(sample.meta).encode()}
    if sample.conversation is not None:
        out[CONVERSATION] = json_text(sample.conversation).encode()
    return out


def require_members(members: dict) -> None:
    """Every sample holds features and meta; a sample without them is a broken shard, reported by key."""
    if FEATURES not in members or META not in members:
        raise ValueError(f"{members['__key__']}: sample lacks {FEATURES} or {META}")


def decode_sample(members: dict) -> Sample:
    """Members (bytes, as read from a tar) → Sample. Unknown members are ignored; `.npy` never unpickles."""
    key = members["__key__"]
    require_members(members)
    feats = load_npy_bytes(members[FEATURES], f"{key}.{FEATURES}")  # the header's size is checked first
    meta = json.loads(members[META])
    conv = json.loads(members[CONVERSATION]) if CONVERSATION in members else None
    return Sample(key=key, features=feats, meta=meta, conversation=conv)


def iter_shard(path: str | Path) -> Iterator[Sample]:
    for members in iter_tar_members(path):
        yield decode_sample(members)


class ShardWriter:
    """Writes samples into shards `{prefix}-{000000}.tar` of at most `samples_per_shard` samples each.

    Each tar is written to a temporary file and committed when complete (storage.AtomicFile: `.{name}.tmp` renamed
    on local disk, one upload of the finished object to `s3://…`), so a crash never leaves a truncated shard under a
    final name. `shards` lists what was written (name, samples, bytes, sha256, keys).
    """

    def __init__(self, out_dir: str | Path, prefix: str, samples_per_shard: int = 1000, mtime: float | None = None):
        # `mtime` fixes the tar members' modification time (default: now), so the same input gives byte-identical shards.
        if samples_per_shard < 1:
            raise ValueError("samples_per_shard must be ≥ 1")
        self.out_dir = str(out_dir)
        storage.makedirs(self.out_dir)
        self.prefix = prefix
        self.samples_per_shard = samples_per_shard
        self.mtime = mtime
        self.shards: list[ShardInfo] = []
        self._tar = None
        self._keys: list[str] = []
        self._pending: storage.AtomicFile | None = None

    def write(self, sample: Sample) -> None:
        import webdataset as wds

        members = encode_sample(sample)
        if self._tar is None:
            name = f"{self.prefix}-{len(self.shards):06d}{SHARD_SUFFIX}"
            self._pending = storage.AtomicFile(storage.join(self.out_dir, name))
            self._stream = open(self._pending.local, "wb")
            self._tar = wds.TarWriter(self._stream, encoder=False, mtime=self.mtime)
        self._tar.write(members)
        self._keys.append(sample.key)
        if len(self._keys) >= self.samples_per_shard:
            self._finish()

    def _finish(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        fsync_file(self._stream)  # the bytes are on disk before the rename makes the shard visible
        self._stream.close()
        pending = self._pending
        digest = file_sha256(pending.local)
        size = Path(pending.local).stat().st_size
        pending.commit()
        self.shards.append(ShardInfo(storage.basename(pending.location), len(self._keys), size, digest,
                                     list(self._keys)))
        self._tar, self._pending, self._keys = None, None, []

    def close(self) -> list[ShardInfo]:
        self._finish()
        return self.shards

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._tar is not None:  # leave no partial shard behind
            self._tar.close()
            self._stream.close()
            self._pending.discard()


def write_index(out_dir: str | Path, shards: Iterable[ShardInfo], *, encoder: str | None, num_frames: int | None,
                dim: int | None, manifest_hash: str | None, errors: int = 0, extra: dict | None = None) -> Path:
    """Write `index.json` (last, after every shard is in place). `extra` holds producer-specific statistics."""
    shards = sorted(shards, key=lambda s: s.name)
    index = {
        "format_version": FORMAT_VERSION,
        "producer": producer(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "encoder": encoder,
        "num_frames": num_frames,
        "dim": dim,
        "manifest_hash": manifest_hash,
        "shards": [s.to_index() for s in shards],
        "totals": {"shards": len(shards), "samples": sum(s.samples for s in shards),
                   "bytes": sum(s.bytes for s in shards), "errors": errors},
    }
    if extra:
        index.update(extra)
    return storage.write_json_atomic(storage.join(out_dir, INDEX), index)


def read_index(shard_dir: str | Path) -> dict:
    path = storage.join(shard_dir, INDEX)
    try:
        index = json.loads(storage.read_bytes(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: not a shard folder, or the job that writes it has not finished") \
            from None
    if index.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {index.get('format_version')} is not {FORMAT_VERSION}")
    return index


def shard_paths(shard_dir: str | Path, index: dict | None = None) -> list[Path] | list[str]:
    """The shards' locations: Paths for a local folder (as before), `s3://…` strings for an object store."""
    index = index if index is not None else read_index(shard_dir)
    if storage.is_remote(shard_dir):
        return [storage.join(shard_dir, s["name"]) for s in index["shards"]]
    return [Path(storage.local_path(shard_dir)) / s["name"] for s in index["shards"]]


def iter_samples(shard_dir: str | Path) -> Iterator[Sample]:
    """Every sample of a shard folder, shard by shard in index order."""
    for path in shard_paths(shard_dir):
        yield from iter_shard(path)


def append_errors(path: str | Path, records: Iterable[ErrorRecord]) -> int:
    n = 0
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
            n += 1
        fsync_file(f)
    return n


def write_errors(location: str | Path, records: Iterable[ErrorRecord]) -> int:
    """Write a whole error file at once, atomically (object stores cannot append)."""
    lines = [json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records]
    storage.write_bytes_atomic(location, "".join(lines).encode())
    return len(lines)


def read_errors(path: str | Path) -> list[ErrorRecord]:
    """The error records of a file, or of a shard folder's errors.jsonl; [] when there is none."""
    if not str(path).endswith(".jsonl") or (not storage.is_remote(path) and Path(path).is_dir()):
        path = storage.join(path, ERRORS)
    try:
        text = storage.read_text(path)
    except FileNotFoundError:
        return []
    return [ErrorRecord(**json.loads(line)) for line in text.splitlines() if line.strip()]
