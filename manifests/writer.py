"""Writing a manifest as its rows arrive: Parquet row groups, rejections streamed to `.errors.jsonl`.

Memory is one row group plus 8 bytes per row (a hash of its key, to find repeated keys at the end), whatever the
size of the input. Both files are written under temporary names and renamed by `close`, so a run that fails leaves
the previous manifest in place. Keys repeated by the reader are made unique at `close` by the rule of
`manifests.common.unique_keys` (a second pass over the written file, only when some key repeats).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from array import array
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Callable

ROW_GROUP = 8192
"""Rows per Parquet row group (and per batch held in memory)."""
STAGES = 4
"""Rejections are kept in the order the in-memory path gave them: the reader's, then check_rows', check_media's and
the missing-media ones; each stage has its own temporary file, joined at `close`."""
KEY_SUFFIXED = "key_suffixed"  # manifests.common's flag (common imports this module's users, not the reverse)


def errors_path(manifest_path: str | Path) -> Path:
    """Where the rejections of a manifest go: `x.parquet` → `x.errors.jsonl`."""
    p = Path(manifest_path)
    return p.with_name(p.name.removesuffix(".parquet") + ".errors.jsonl")


def arrow_schema():
    import pyarrow as pa

    event = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("caption", pa.string())])
    return pa.schema([
        pa.field("key", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("media", pa.string(), nullable=False),
        pa.field("window", pa.struct([("start", pa.float64()), ("end", pa.float64())])),
        pa.field("duration", pa.float64()),
        pa.field("events", pa.list_(event)),
        pa.field("caption", pa.string()),
        pa.field("source_id", pa.string()),
        pa.field("flags", pa.list_(pa.string())),
    ])


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little", signed=True)


def _record(row) -> dict:
    d = row.to_json()
    d["window"] = {"start": row.window[0], "end": row.window[1]} if row.window is not None else None
    return d


class ManifestWriter:
    """`add` rows and `reject` records as they come; `close(provenance, stats)` publishes both files."""

    def __init__(self, path: str | Path, row_group: int = ROW_GROUP) -> None:
        self.path, self.row_group = Path(path), row_group
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.err = errors_path(self.path)
        self.err_tmp = [self.err.with_name(f"{self.err.name}.{i}.tmp") for i in range(STAGES)]
        self.err_files = [open(p, "w") for p in self.err_tmp]
        self.rows = 0
        self.events = 0
        self.flags: Counter = Counter()
        self.reasons: Counter = Counter()
        self.hashes = array("q")
        self._batch: list[dict] = []
        self._writer = None

    def add(self, row) -> None:
        """A `manifests.schema.ManifestRow` (this module sits under schema, so it names no type of it)."""
        self._batch.append(_record(row))
        self.hashes.append(key_hash(row.key))
        self.rows += 1
        self.events += len(row.events)
        self.flags.update(row.flags)
        if len(self._batch) >= self.row_group:
            self._flush()

    def reject(self, rejection, stage: int = 0) -> None:
        self.err_files[stage].write(json.dumps(asdict(rejection)) + "\n")
        self.reasons[rejection.reason] += 1

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            # store_schema=False: the provenance and stats are known only at the end and go into the footer's
            # key-value metadata, which is then what pq.read_schema reports.
            self._writer = pq.ParquetWriter(self.tmp, arrow_schema(), store_schema=False)
        if self._batch:
            self._writer.write_table(pa.Table.from_pylist(self._batch, schema=arrow_schema()))
        self._batch = []

    def close(self, provenance: dict, stats: Callable[["ManifestWriter"], dict]) -> Path:
        """Publish both files; `stats(self)` gives the figures for the metadata once keys are final (it may read
        `rows`, `events`, `flags`, `reasons`)."""
        self._flush()
        dups = self._repeated_hashes()
        if dups:
            self._unique_keys(dups)
        self._writer.add_key_value_metadata({"vtl.provenance": json.dumps(provenance, sort_keys=True),
                                             "vtl.stats": json.dumps(stats(self), sort_keys=True, default=str)})
        self._writer.close()
        for f in self.err_files:
            f.close()
        with open(self.err_tmp[0], "a") as out:
            for p in self.err_tmp[1:]:
                with open(p) as f:
                    shutil.copyfileobj(f, out)
                p.unlink()
        self.tmp.replace(self.path)
        self.err_tmp[0].replace(self.err)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        for f in self.err_files:
            f.close()
        for p in (self.tmp, *self.err_tmp):
            p.unlink(missing_ok=True)

    def _repeated_hashes(self) -> set[int]:
        import numpy as np

        h = np.frombuffer(self.hashes, dtype=np.int64) if self.hashes else np.zeros(0, np.int64)
        self.sorted_hashes = np.sort(h)
        repeated = self.sorted_hashes[1:][self.sorted_hashes[1:] == self.sorted_hashes[:-1]]
        return {int(x) for x in repeated}

    def _taken(self, key: str) -> bool:
        import numpy as np

        h = key_hash(key)
        i = int(np.searchsorted(self.sorted_hashes, h))
        return i < len(self.sorted_hashes) and int(self.sorted_hashes[i]) == h

    def _unique_keys(self, dups: set[int]) -> None:
        """`manifests.common.unique_keys` over the written file: only rows whose key repeats are looked at."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        used: set[str] = set()
        self._writer.close()
        src = self.tmp.with_name(self.tmp.name + ".keys")
        self.tmp.replace(src)
        self._writer = out = pq.ParquetWriter(self.tmp, arrow_schema(), store_schema=False)
        for batch in pq.ParquetFile(src).iter_batches(batch_size=self.row_group):
            records = batch.to_pylist()
            for d in records:
                if key_hash(d["key"]) not in dups and d["key"] not in used:
                    continue
                if d["key"] not in used:
                    used.add(d["key"])
                    continue
                n = 2
                while f"{d['key']}_{n}" in used or self._taken(f"{d['key']}_{n}"):
                    n += 1
                d["key"] = f"{d['key']}_{n}"
                used.add(d["key"])
                if KEY_SUFFIXED not in d["flags"]:
                    self.flags[KEY_SUFFIXED] += 1
                d["flags"] = sorted(set(d["flags"]) | {KEY_SUFFIXED})
            out.write_table(pa.Table.from_pylist(records, schema=arrow_schema()))
        src.unlink()
