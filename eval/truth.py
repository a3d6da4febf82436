"""Ground truth for `vtl-eval score`, held compactly: the annotations are read once, row by row, into shared arrays.

Every event of the file lives in one `EventStore`: start and end as float64 (`array('d')`, 16 bytes), its caption as
UTF-8 bytes in one buffer with an 8-byte offset. A video's `Truth` (`eval.score`) keeps its duration and an `Events`
view (a slice of the store) that builds the `((start, end), caption)` tuples when they are read, so a query costs
~30 bytes plus its caption's bytes instead of the reader's Python objects (~0.7 KiB). The values come back as the
reader gave them (an int start stays an int), so figures and records are the same to the last bit.

Readers that stream (ActivityNet, YouCook2, InternVid, LCC, manifests) are drained row by row; the small ones
(Charades-STA, DiDeMo, ...) still build their rows first. Keys repeated by a reader get the suffixes of
`manifests.common.unique_keys` (the source id, the name reports use, is unchanged).
"""
from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Iterator

_START_INT, _END_INT = 1, 2


class EventStore:
    """All events of one annotation file: starts, ends, int flags, and the captions' UTF-8 bytes with offsets."""

    def __init__(self):
        self.starts, self.ends, self.ints = array("d"), array("d"), bytearray()
        self.text, self.text_at = bytearray(), array("q", [0])

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, start, end, caption: str) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.ints.append((type(start) is int) * _START_INT | (type(end) is int) * _END_INT)
        self.text += caption.encode("utf-8", "surrogatepass")
        self.text_at.append(len(self.text))

    def event(self, i: int) -> tuple[tuple[float, float], str]:
        flags, start, end = self.ints[i], self.starts[i], self.ends[i]
        span = (int(start) if flags & _START_INT else start, int(end) if flags & _END_INT else end)
        return span, self.text[self.text_at[i]:self.text_at[i + 1]].decode("utf-8", "surrogatepass")


class Events(Sequence):
    """One video's events: a slice [lo, hi) of the store, read as a tuple of `((start, end), caption)` would be."""

    __slots__ = ("store", "lo", "hi")

    def __init__(self, store: EventStore, lo: int, hi: int):
        self.store, self.lo, self.hi = store, lo, hi

    def __len__(self) -> int:
        return self.hi - self.lo

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self)[i]
        if not -len(self) <= i < len(self):
            raise IndexError("event index out of range")
        return self.store.event(self.lo + i % len(self))

    def __iter__(self) -> Iterator:
        return (self.store.event(i) for i in range(self.lo, self.hi))

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


def _rows(path: Path, dataset: str | None, durations, suffixes: dict[str, str]) -> Iterator:
    """The kept rows of a manifest or an annotation file, one at a time."""
    if path.suffix == ".parquet":
        from manifests.schema import iter_manifest

        yield from iter_manifest(path)
        return
    from manifests.readers import KEPT, stream_dataset

    name = dataset or suffixes.get(path.suffix)
    if name is None:
        raise ValueError(f"cannot tell the dataset of {path}: pass --dataset")
    for stage, item in stream_dataset(name, path, durations, stats={}):
        if stage == KEPT:
            yield item


def unique_names(keys: list[str]) -> list[str]:
    """`manifests.common.unique_keys`'s rule on bare keys: the first keeps its key, later ones get `_2`, `_3`, ...
    (skipping any another row already uses)."""
    taken = Counter(keys)
    if all(n == 1 for n in taken.values()):
        return keys
    used: set[str] = set()
    out = []
    for key in keys:
        if key in used:
            n = 2
            while f"{key}_{n}" in used or f"{key}_{n}" in taken:
                n += 1
            key = f"{key}_{n}"
        used.add(key)
        out.append(key)
    return out


def read_truth(annotations: str | Path, dataset: str | None, durations, make: Callable, suffixes: dict[str, str]
               ) -> dict:
    """Ground truth by video id (both the source id and the manifest key): `make(duration, Events)` per video;
    `suffixes` names the dataset of a file by its suffix when `dataset` is None."""
    from infra import storage

    if storage.is_remote(annotations):  # never let Path() turn s3://b/x into a local s3:/b/x
        raise storage.StorageError(f"{annotations}: vtl-eval score reads ground truth from a local file; copy it "
                                   f"here first (object-store annotations are not supported by score yet)")
    path = Path(storage.local_path(annotations))
    store, sources, keys, videos = EventStore(), [], [], []
    for row in _rows(path, dataset, durations, suffixes):
        if not row.duration:
            raise ValueError(f"{row.key}: no duration in the annotations; pass --durations")
        lo = len(store)
        for e in row.events:
            store.add(e.start, e.end, e.caption)
        videos.append(make(float(row.duration), Events(store, lo, len(store))))
        sources.append(row.source_id)
        keys.append(row.key)
    if path.suffix != ".parquet":  # a manifest's keys are unique already
        keys = unique_names(keys)
    truth: dict = {}
    for source, key, t in zip(sources, keys, videos):
        for vid in dict.fromkeys((source or key, key)):  # source id first: the name reports use
            truth[vid] = t
    return truth
