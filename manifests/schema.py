"""The manifest contract: one row per sample, whatever the source dataset.

Every reader in `manifests/` produces `ManifestRow`s; `write_manifest` stores them as Parquet with the Arrow schema
below (column names as in DESIGN.md, so other tools can read them), `read_manifest` gives them back. Rows a reader
cannot use are `Rejection`s written to `<manifest>.errors.jsonl`; rows that look wrong but are kept as published carry
`flags`. pyarrow is imported inside the functions that need it, so importing this module stays cheap.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from manifests.writer import ManifestWriter, arrow_schema, errors_path  # noqa: F401  (the contract names them here)

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
"""A sample key inside shards. No dots: WebDataset splits member names on the first dot."""

KINDS = ("video", "image")


def make_key(text: str) -> str:
    """Turn any id (file name, YouTube id, LLaVA id) into a valid key; characters outside the key alphabet become `_`."""
    key = re.sub(r"[^A-Za-z0-9_-]", "_", text.strip())
    if not key:
        raise ValueError(f"cannot make a key from {text!r}")
    return key


@dataclass(frozen=True)
class Event:
    """One annotated event; `start`/`end` in seconds relative to the window start."""

    start: float
    end: float
    caption: str


@dataclass(frozen=True)
class ManifestRow:
    """One sample. `window` is (start, end) seconds inside the media file, None for the whole file; `duration` is the
    window's length in seconds (None when unknown until decoding, e.g. a user's own files)."""

    key: str
    dataset: str
    kind: str
    media: str
    window: tuple[float, float] | None = None
    duration: float | None = None
    events: tuple[Event, ...] = ()
    caption: str | None = None
    source_id: str | None = None
    flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not KEY_RE.match(self.key):
            raise ValueError(f"invalid key {self.key!r}: keys are [A-Za-z0-9_-]+")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.window is not None and not self.window[0] < self.window[1]:
            raise ValueError(f"window {self.window} of {self.key}: start must be < end")

    def to_json(self) -> dict:
        d = asdict(self)
        d["window"] = list(self.window) if self.window is not None else None
        d["events"] = [asdict(e) for e in self.events]
        d["flags"] = list(self.flags)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ManifestRow":
        window = d.get("window")
        if isinstance(window, dict):
            window = (window["start"], window["end"])
        return cls(
            key=d["key"], dataset=d["dataset"], kind=d["kind"], media=d["media"],
            window=tuple(float(x) for x in window) if window is not None else None,
            duration=d.get("duration"),
            events=tuple(Event(float(e["start"]), float(e["end"]), e["caption"]) for e in d.get("events") or ()),
            caption=d.get("caption"), source_id=d.get("source_id"), flags=tuple(d.get("flags") or ()),
        )


@dataclass(frozen=True)
class Rejection:
    """A source record that cannot become a sample, with the reason (a short snake_case word) and detail."""

    source_id: str
    reason: str
    detail: str = ""


@dataclass
class ReadResult:
    """What a reader returns: the rows it kept, the records it rejected, and per-reason statistics."""

    rows: list[ManifestRow] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def flag_counts(self) -> Counter:
        return Counter(f for r in self.rows for f in r.flags)

    def rejection_counts(self) -> Counter:
        return Counter(r.reason for r in self.rejected)


def collect(items: Iterable[ManifestRow | Rejection], stats: dict) -> ReadResult:
    """A streaming reader's rows and rejections gathered into one ReadResult (`stats` is filled once drained)."""
    result = ReadResult()
    for item in items:
        (result.rows if isinstance(item, ManifestRow) else result.rejected).append(item)
    result.stats = stats
    return result


def duplicate_keys(keys: Iterable[str]) -> list[str]:
    """Keys that occur more than once (a key names one sample: two rows with it would write two samples under it)."""
    return [k for k, n in Counter(keys).items() if n > 1]


def manifest_problem(rows: list[dict]) -> str | None:
    """Why rows read from a manifest cannot be extracted (none at all, a repeated key), or None; write_manifest never
    writes either, so such a file was made or edited by something else."""
    if not rows:
        return "holds no rows: nothing to extract (see its .errors.jsonl for what the manifest step rejected)"
    dup = duplicate_keys(r["key"] for r in rows)
    if dup:
        return (f"repeats the keys {dup[:5]}{' and more' if len(dup) > 5 else ''} (each key names one sample); "
                "rebuild it with vtl-pipeline manifest")
    return None


def write_manifest(result: ReadResult, path: str | Path, provenance: dict) -> Path:
    """Write rows as Parquet in row groups (provenance in the file's metadata) and rejections beside it; returns the
    Parquet path."""
    dup = duplicate_keys(r.key for r in result.rows)
    if dup:
        raise ValueError(f"duplicate manifest keys: {dup[:5]}")
    writer = ManifestWriter(path)
    try:
        for row in result.rows:
            writer.add(row)
        for rej in result.rejected:
            writer.reject(rej)
        return writer.close(provenance, lambda _: result.stats)
    except BaseException:
        writer.abort()
        raise


def iter_manifest(path: str | Path, batch_size: int = 4096) -> Iterator[ManifestRow]:
    """Stream rows of a manifest without loading the whole file."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=batch_size):
        for d in batch.to_pylist():
            yield ManifestRow.from_json(d)


def read_manifest(path: str | Path) -> list[ManifestRow]:
    return list(iter_manifest(path))


def manifest_metadata(path: str | Path) -> dict:
    """The provenance and stats stored in a manifest's Parquet metadata."""
    import pyarrow.parquet as pq

    md = pq.read_schema(path).metadata or {}
    return {k.decode().removeprefix("vtl."): json.loads(v) for k, v in md.items() if k.startswith(b"vtl.")}


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """sha256 of a local file, or of an open binary stream read to its end (e.g. an object-store file)."""
    if hasattr(path, "read"):
        h = hashlib.sha256()
        while block := path.read(chunk):
            h.update(block)
        return h.hexdigest()
    with open(path, "rb") as f:
        return file_sha256(f, chunk)
