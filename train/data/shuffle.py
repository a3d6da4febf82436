"""The order a worker yields its samples in: a shuffle buffer over sample positions, replayable without reading.

The shuffle buffer's random choices are made on sample *positions* (0..n-1 in the worker's stream), not on the
samples, so the order is a pure function of the seed and the shard sizes. A resumed worker replays the position
order for the samples it already yielded without reading anything, then reads only the shards that still hold
samples it has not yielded.
"""
from __future__ import annotations

import random
from typing import Callable, Iterator


class ShuffleOrder:
    """The order a shuffle buffer of `size` yields positions 0..total-1 in, computed on positions only.

    Fill the buffer; then for every new position swap it with a random buffer slot and yield that slot's old
    content; at the end yield what is left in random order. `buffer` and `read` say which positions a reader
    must hold at any point, which is what a resumed reader needs.
    """

    def __init__(self, total: int, size: int, rng: random.Random):
        self.total, self.size, self.rng = total, size, rng
        self.buffer: list[int] = []
        self.read = 0
        self._drain: list[int] | None = None

    def __iter__(self) -> "ShuffleOrder":
        return self

    def __next__(self) -> int:
        while self.read < self.total and len(self.buffer) < self.size:
            self.buffer.append(self.read)
            self.read += 1
        if self.read < self.total:
            slot = self.rng.randrange(self.size)
            out, self.buffer[slot] = self.buffer[slot], self.read
            self.read += 1
            return out
        if self._drain is None:
            self._drain = self.buffer
            self.rng.shuffle(self._drain)
        if not self._drain:
            raise StopIteration
        return self._drain.pop()

    def held(self) -> set[int]:
        """Positions read but not yet yielded."""
        return set(self.buffer) if self._drain is None else set(self._drain)


def _read_positions(shards, wanted: Callable[[int], bool], table_of) -> Iterator[tuple[int, dict]]:
    """(position, sample) for the positions `wanted(pos)` accepts, skipping whole shards that hold none."""
    start = 0
    for shard in shards:
        end = start + shard.samples
        if any(wanted(p) for p in range(start, end)):
            table = table_of(shard)
            if len(table) != shard.samples:
                raise ValueError(f"{shard.path}: holds {len(table)} samples, index.json says {shard.samples}")
            for i in range(len(table)):
                if wanted(start + i):
                    yield start + i, table.item(i)
        start = end


def ordered_stream(shards, buffer: int, rng: random.Random, skip: int, table_of) -> Iterator[tuple[int, dict]]:
    """Samples of `shards` in shuffle-buffer order, the first `skip` left out without reading them.

    `table_of(shard)` gives a shard's samples (a train.data.token_cache.ShardTable); at most one shard's table plus
    `buffer` samples are held at a time.
    """
    order = ShuffleOrder(sum(s.samples for s in shards), buffer, rng)
    for _ in range(skip):
        next(order)
    pending, first_unread = order.held(), order.read
    reader = _read_positions(shards, lambda p: p >= first_unread or p in pending, table_of)
    held: dict[int, dict] = {}
    for pos in order:
        while pos not in held:
            got, sample = next(reader)
            held[got] = sample
        yield pos, held.pop(pos)
