"""The manifest as extract sees it: a row count for the driver, one streaming check, and row ranges for the tasks.

The driver never holds the manifest. It reads the Parquet footer (the row count plans the tasks), checks every row
once in a streaming pass over three columns (`check_manifest`: keys, kinds and windows valid, no key twice, memory
8 bytes per row), and hands each task a `ManifestSlice`: the file and a row range. A task reads its own rows when it
runs (`read_rows`: only the row groups that overlap its range, as dicts, `ManifestRow.to_json`'s shape), so starting a
run costs what the tasks left to run cost, not what the manifest holds (docs/extract.md, "Tasks, resume, accounting").
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from infra import storage
from pipeline.extract.config import ExtractError

CHECK_BATCH = 65536
READ_BATCH = 4096
READ_BUFFER = 1 << 20
"""Bytes a task reads from the manifest at a time (from an object store: one ranged GET), rather than whole column
chunks of its row groups."""


@dataclass(frozen=True)
class ManifestSlice:
    """Rows [start, stop) of a manifest, read when iterated. `base`: the driver's folder, which relative media are
    relative to (a Ray worker runs in another folder)."""

    path: str
    start: int
    stop: int
    base: str

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        return iter(read_rows(self.path, self.start, self.stop, self.base))


def slices(path: str, rows: int, num_tasks: int, base: str | None = None) -> list[ManifestSlice]:
    """Fixed contiguous slices: task t gets rows [t·n/T, (t+1)·n/T). Same manifest and T → same slices."""
    base = base or os.getcwd()
    return [ManifestSlice(path, t * rows // num_tasks, (t + 1) * rows // num_tasks, base) for t in range(num_tasks)]


def count_rows(path: str) -> int:
    """The manifest's row count, from its footer; ExtractError when it is missing or not Parquet."""
    import pyarrow.parquet as pq

    from infra.preflight import preflight

    if storage.is_remote(path):
        preflight(path, what="manifest")  # bucket, credentials, endpoint, the object itself
    if not storage.isfile(path):
        raise ExtractError(f"manifest {path} not found (--manifest FILE, or --dataset NAME with --data-root)")
    try:
        with storage.open(path, "rb") as f:
            return pq.ParquetFile(f).metadata.num_rows
    except Exception as e:
        raise ExtractError(f"cannot read manifest {path}: {type(e).__name__}: {e}") from e


def read_rows(path: str, start: int, stop: int, base: str) -> list[dict]:
    """Rows [start, stop) as dicts, reading only the row groups that overlap the range."""
    import pyarrow.parquet as pq

    with storage.open(path, "rb") as f:
        pf = pq.ParquetFile(f, buffer_size=READ_BUFFER)  # pages read as needed: the loop stops at `stop`
        groups, first, offset = [], None, 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if offset < stop and offset + n > start:
                groups.append(g)
                first = offset if first is None else first
            offset += n
        out, pos = [], first
        for batch in (pf.iter_batches(batch_size=READ_BATCH, row_groups=groups) if groups else ()):
            lo, hi = max(start - pos, 0), min(stop - pos, batch.num_rows)
            if hi > lo:
                out += [to_row(d, base) for d in batch.slice(lo, hi - lo).to_pylist()]
            pos += batch.num_rows
            if pos >= stop:
                break
    return out


def to_row(d: dict, base: str) -> dict:
    """One Parquet record as `ManifestRow.from_json(d).to_json()` gives it (the file was checked by
    `check_manifest`), with relative media made absolute against `base`."""
    window = d.get("window")
    if isinstance(window, dict):
        window = (window["start"], window["end"])
    media = d["media"]
    return {"key": d["key"], "dataset": d["dataset"], "kind": d["kind"],
            "media": media if "://" in media else os.path.normpath(os.path.join(base, media)),
            "window": [float(x) for x in window] if window is not None else None, "duration": d.get("duration"),
            "events": [{"start": float(e["start"]), "end": float(e["end"]), "caption": e["caption"]}
                       for e in d.get("events") or ()],
            "caption": d.get("caption"), "source_id": d.get("source_id"), "flags": list(d.get("flags") or ())}


def check_manifest(path: str, rows: int) -> list[str]:
    """Every row checked, streaming over its key, kind and window: the kinds present, or ExtractError (an invalid
    value, no rows, a repeated key). Repeated keys are found from 64-bit hashes of the keys (8 bytes a row), then
    confirmed by a second pass over the keys whose hash repeats."""
    import numpy as np

    from manifests.schema import manifest_problem

    if rows == 0:
        raise ExtractError(f"manifest {path} {manifest_problem([])}")
    hashes, kinds, pos = np.empty(rows, np.int64), set(), 0
    for batch in _batches(path, ("key", "kind", "window")):
        if problem := _invalid(batch):
            raise ExtractError(f"cannot read manifest {path}: {problem}")
        keys = batch.column("key").to_pylist()
        kinds.update(batch.column("kind").unique().to_pylist())
        hashes[pos:pos + len(keys)] = np.fromiter(map(hash, keys), np.int64, len(keys))
        pos += len(keys)
    hashes.sort()
    repeated = set(hashes[1:][hashes[1:] == hashes[:-1]].tolist())
    del hashes
    if repeated:  # the keys behind a repeated hash, in manifest order: a true repeat or a hash collision
        suspects = [k for batch in _batches(path, ("key",)) for k in batch.column("key").to_pylist()
                    if hash(k) in repeated]
        if problem := manifest_problem([{"key": k} for k in suspects]):
            raise ExtractError(f"manifest {path} {problem}")
    return sorted(kinds)


def _batches(path: str, columns: tuple[str, ...]):
    import pyarrow.parquet as pq

    with storage.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        yield from pf.iter_batches(batch_size=CHECK_BATCH, columns=[c for c in columns if c in pf.schema_arrow.names])


def _invalid(batch) -> str | None:
    """Why a batch holds a row `ManifestRow` refuses (the first one), or None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from manifests.schema import KEY_RE, KINDS

    keys, kinds = batch.column("key"), batch.column("kind")
    ok_key = pc.fill_null(pc.match_substring_regex(keys, KEY_RE.pattern), False)
    if not pc.all(ok_key).as_py():
        bad = keys[pc.index(ok_key, False).as_py()].as_py()
        return f"ValueError: invalid key {bad!r}: keys are [A-Za-z0-9_-]+"
    ok_kind = pc.fill_null(pc.is_in(kinds, value_set=pa.array(KINDS)), False)
    if not pc.all(ok_kind).as_py():
        return f"ValueError: kind must be one of {KINDS}, got {kinds[pc.index(ok_kind, False).as_py()].as_py()!r}"
    if "window" in batch.schema.names and pa.types.is_struct(batch.column("window").type):
        window = batch.column("window")
        ordered = pc.less(pc.struct_field(window, "start"), pc.struct_field(window, "end"))
        ok = pc.or_kleene(pc.is_null(window), pc.fill_null(ordered, False))
        if not pc.all(ok).as_py():
            i = pc.index(ok, False).as_py()
            return f"ValueError: window {window[i].as_py()} of {keys[i].as_py()}: start must be < end"
    return None
