"""One shard's training samples, tokenized and located once: `ShardTable`, and the on-disk cache that keeps it.

A training worker needs, per sample, its key, its token ids and labels, and where its features lie in the shard.
Computing that means walking the tar headers (pipeline.contract.shard_refs, ~40 µs a sample) and tokenizing the conversation
(pipeline.contract.conversation.encode_many, ~150 µs a sample with a small BPE tokenizer), which is most of a worker's time. Both
depend only on the shard's bytes, the tokenizer and the conversation format, so `load_table` computes them once per
shard and keeps them in `<cache dir>/<shard name>.<digest>.npz`; later epochs, resumed runs and later runs with the
same tokenizer read that file instead (a few µs a sample).

A cached table is used only when everything it was made from is unchanged: the digest covers the shard (sha256 in
index.json, size, mtime), the tokenizer (a hash of its saved files), the conversation format and the code that makes
tables (this module, pipeline/contract/conversation.py, pipeline/contract/shard_refs.py). Any change gives another file name, so a stale
table is never read; old files are simply left behind. A cache folder that cannot be written is reported once and
the run goes on uncached. Files are read with `np.load(allow_pickle=False)`; each records what it was made from.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.contract.shard_refs import FeatureRef, iter_sample_refs, prefetch, shard_stat
from pipeline.contract.shards import CONVERSATION, FEATURES, require_members
from pipeline.contract.provenance import producer
from pipeline.contract.conversation import encode_many

log = logging.getLogger(__name__)

TOKENIZE_CHUNK = 64  # conversations per tokenizer call (amortises the call and the constant pieces)
CACHE_VERSION = 1
# The code that makes tables: a change to any of these modules changes every cache file name.
_CODE = [Path(sys.modules[name].__file__) for name in (__name__, "pipeline.contract.conversation",
                                                          "pipeline.contract.shard_refs")]
_ARRAYS = ("keys", "feature_offset", "feature_shape", "feature_dtype", "fortran", "token_start", "ids", "labels")


@dataclass(frozen=True)
class ShardTable:
    """Every sample of one shard: key, token ids and labels (one flat int32 array each), and feature location."""

    path: str
    keys: np.ndarray            # (n,) str
    feature_offset: np.ndarray  # (n,) int64: byte offset of the array data in the shard
    feature_shape: np.ndarray   # (n, 2) int64: rows, dim
    feature_dtype: np.ndarray   # (n,) uint8: index into dtypes
    fortran: np.ndarray         # (n,) bool
    token_start: np.ndarray     # (n + 1,) int64: sample i's tokens are ids[token_start[i]:token_start[i + 1]]
    ids: np.ndarray             # int32
    labels: np.ndarray          # int32
    dtypes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.keys)

    def item(self, i: int) -> dict:
        """Sample i as the loader's workers use it: key, input_ids and labels (array views), features (FeatureRef)."""
        a, b = self.token_start[i], self.token_start[i + 1]
        rows, dim = self.feature_shape[i]
        ref = FeatureRef(self.path, int(self.feature_offset[i]), (int(rows), int(dim)),
                         self.dtypes[self.feature_dtype[i]], bool(self.fortran[i]))
        return {"key": str(self.keys[i]), "input_ids": self.ids[a:b], "labels": self.labels[a:b], "features": ref}


def build_table(path: str, tokenizer, conv_format: str) -> ShardTable:
    """Walk the shard and tokenize its conversations (`encode_many`, TOKENIZE_CHUNK at a time)."""
    samples = list(iter_sample_refs(path))
    for members in samples:
        require_members(members)
        if CONVERSATION not in members:
            raise ValueError(f"sample {members['__key__']} has no conversation.json: pass training shards "
                             f"(build-qa output), not feature shards")
        if len(members[FEATURES].shape) != 2:
            raise ValueError(f"{path}: sample {members['__key__']} has features of shape {members[FEATURES].shape}; "
                             f"training needs (rows, dim)")
    turns = [json.loads(m[CONVERSATION])["turns"] for m in samples]
    encoded = [enc for i in range(0, len(turns), TOKENIZE_CHUNK)
               for enc in encode_many(turns[i:i + TOKENIZE_CHUNK], tokenizer, conv_format)]
    refs = [m[FEATURES] for m in samples]
    dtypes = tuple(dict.fromkeys(r.dtype for r in refs))
    lengths = [len(e.input_ids) for e in encoded]
    return ShardTable(
        path=path, keys=np.array([m["__key__"] for m in samples], dtype=str),
        feature_offset=np.array([r.offset for r in refs], dtype=np.int64),
        feature_shape=np.array([r.shape for r in refs], dtype=np.int64).reshape(-1, 2),
        feature_dtype=np.array([dtypes.index(r.dtype) for r in refs], dtype=np.uint8),
        fortran=np.array([r.fortran for r in refs], dtype=bool),
        token_start=np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64),
        ids=np.array([i for e in encoded for i in e.input_ids], dtype=np.int32),
        labels=np.array([i for e in encoded for i in e.labels], dtype=np.int32), dtypes=dtypes)


# Saved config keys that say where and how a tokenizer was loaded, not how it tokenizes.
_WHERE_FROM = {"name_or_path", "is_local", "local_files_only", "_commit_hash", "cache_dir", "revision", "token"}


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's saved files (`save_pretrained`), without where it was loaded from.

    A difference that does not change tokenization only costs a rebuilt table, never a wrong one."""
    h = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for f in sorted(Path(tmp).rglob("*")):
            if not f.is_file():
                continue
            data = f.read_bytes()
            if f.suffix == ".json":
                obj = json.loads(data)
                if isinstance(obj, dict):
                    obj = {k: v for k, v in obj.items() if k not in _WHERE_FROM}
                data = json.dumps(obj, sort_keys=True).encode()
            h.update(f"{f.relative_to(tmp)}\0{len(data)}\0".encode())
            h.update(data)
    return h.hexdigest()


def _code_hash() -> str:
    h = hashlib.sha256(str(CACHE_VERSION).encode())
    for f in _CODE:
        h.update(f.read_bytes())
    return h.hexdigest()


CODE_HASH = _code_hash()


@dataclass(frozen=True)
class TokenCache:
    """Where tables are kept, and for which tokenizer and format (the fingerprint comes from the training process)."""

    directory: str
    tokenizer: str
    conv_format: str

    def recipe(self, path: str, sha256: str) -> dict:
        size, mtime_ns = shard_stat(path)  # a shard in an object store: its size, and the index's sha256
        return {"version": CACHE_VERSION, "code": CODE_HASH, "tokenizer": self.tokenizer, "format": self.conv_format,
                "shard": {"name": Path(path).name, "sha256": sha256, "bytes": size, "mtime_ns": mtime_ns}}

    def file(self, path: str, recipe: dict) -> Path:
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:24]
        return Path(self.directory) / f"{Path(path).name}.{digest}.npz"


_unwritable: set[str] = set()


def load_table(path: str, sha256: str, tokenizer, conv_format: str, cache: TokenCache | None) -> ShardTable:
    """The shard's table from the cache when it holds one made from the same inputs; else built (and cached)."""
    if cache is None:
        return build_table(path, tokenizer, conv_format)
    recipe = cache.recipe(path, sha256)
    target = cache.file(path, recipe)
    if target.exists():
        try:
            table = _read(target, path, recipe)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # e.g. written on a full disk
            log.warning("token cache %s unreadable (%s); rebuilding it", target, err)
        else:
            prefetch(path)  # the training process reads the features soon: let read-ahead start now
            return table
    table = build_table(path, tokenizer, conv_format)
    _write(table, target, recipe)
    return table


def _read(target: Path, path: str, recipe: dict) -> ShardTable:
    with np.load(target, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes())
        if meta["recipe"] != recipe:
            raise ValueError("made from other inputs than its name says")
        arrays = {name: z[name] for name in _ARRAYS}
    return ShardTable(path=path, dtypes=tuple(meta["dtypes"]), **arrays)


def _write(table: ShardTable, target: Path, recipe: dict) -> None:
    cache_dir = str(target.parent)
    if cache_dir in _unwritable:
        return
    meta = {"recipe": recipe, "dtypes": list(table.dtypes), "samples": len(table), "producer": producer(),
            "what": "vtl training-shard token cache: token ids, labels and feature offsets of each sample"}
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                     **{name: getattr(table, name) for name in _ARRAYS})
        os.replace(tmp, target)  # readers see a whole file or none
    except OSError as err:
        _unwritable.add(cache_dir)
        log.warning("token cache folder %s cannot be written (%s); training goes on without it", target.parent, err)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
