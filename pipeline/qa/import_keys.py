"""The sample-key rule of `pipeline.qa.dialogues.iter_keyed` with bookkeeping bounded by the duplicates, not by the
records: what import-vtimellm uses on files of millions of records.

The rule: a video key that occurs once is the sample key; a repeated one becomes `{key}-d{n}` in file order; a key
already given (an id that happens to read `x-d0`) is refused. The first pass keeps 8 bytes a record (a 64-bit hash of
each video key, in an array); the keys whose hash repeats are then counted exactly (one more pass, only when there are
any). The second pass remembers only repeated keys and the keys that end like a generated one (`-d` and digits): a
key of any other shape occurs once and cannot equal a generated key, so it needs no memory.
"""
from __future__ import annotations

import hashlib
import re
from array import array
from collections import Counter
from typing import Callable, Iterable, Iterator

from pipeline.qa.dialogues import KeyedRecord, _video_key

GENERATED = re.compile(r"-d[0-9]+\Z")
"""The shape of a generated key: only such keys can clash."""


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


class KeyCounts:
    """How often each video key occurs: `add` every key (first pass), `settle` once, then `counts[key]`."""

    def __init__(self) -> None:
        self.hashes = array("Q")
        self.repeated: set[int] = set()
        self.exact: Counter = Counter()

    def add(self, vkey: str) -> None:
        self.hashes.append(_hash(vkey))

    def settle(self, records: Callable[[], Iterable]) -> None:
        """Find the hashes that repeat; count their keys exactly over `records()` (a fresh pass), if any."""
        import numpy as np

        h = np.sort(np.frombuffer(self.hashes, dtype=np.uint64))
        self.hashes = array("Q")
        self.repeated = {int(x) for x in np.unique(h[1:][h[1:] == h[:-1]])}
        if self.repeated:  # duplicated ids (or a hash collision, which the exact count resolves)
            for record in records():
                vkey = _video_key(record)
                if vkey is not None and _hash(vkey) in self.repeated:
                    self.exact[vkey] += 1

    def __getitem__(self, vkey: str) -> int:
        return self.exact[vkey] if self.repeated and _hash(vkey) in self.repeated else 1


def iter_keyed_bounded(records: Iterable, counts: KeyCounts) -> Iterator[KeyedRecord]:
    """`iter_keyed`'s keys, one record at a time, remembering only repeated and generated-looking keys."""
    seen: Counter = Counter()
    given: set[str] = set()
    for pos, record in enumerate(records):
        vkey, key = _video_key(record), None
        if vkey is not None:
            n = counts[vkey]
            key = vkey if n == 1 else f"{vkey}-d{seen[vkey]}"
            if n > 1:
                seen[vkey] += 1
            if GENERATED.search(key):
                if key in given:
                    key = None
                else:
                    given.add(key)
        yield KeyedRecord(key, vkey, record if isinstance(record, dict) else {}, pos)
