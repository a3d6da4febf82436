"""Length-grouped micro-batches: a worker's stream cut into windows, each window's samples batched by length.

Padding a random micro-batch to its longest sample wastes a third of a stage-2 step (issue 16: 69 % useful tokens at
micro-batch 8). A worker therefore reads a *window* of the next `window_batches × micro_batch` samples of its shuffled
stream, sorts them by length (text tokens + feature rows), cuts them into micro-batches and yields those in a shuffled
order: the mega-batch scheme of HF's `group_by_length` and LLaVA's `group_by_modality_length`, done per worker on a
stream. Which samples meet in a window stays as random as the shuffle buffer makes it; only who shares a micro-batch
with whom follows the lengths.

Epochs stay whole: a window holds samples of one epoch, except that when an epoch's samples do not fill its last
micro-batch, that micro-batch takes the first samples of the next epoch (as without grouping) and is yielded last.

Everything is a pure function of the samples in the window and of a seed derived from where the window starts, so a
resumed worker rebuilds the window it was in and skips the micro-batches it had already handed out.
"""
from __future__ import annotations

import random
from typing import Iterator

WINDOW_BATCHES = 50
"""Micro-batches per grouping window (~50, as issue 16 measured: 97 % useful tokens at micro-batch 8)."""


def sample_length(item: dict) -> int:
    """Positions a sample takes in the LLM: its text tokens with the video sentinel replaced by the feature rows."""
    return len(item["input_ids"]) - 1 + item["features"].shape[0]


class Peekable:
    """An iterator whose next item can be looked at without taking it."""

    def __init__(self, it: Iterator[dict]):
        self.it, self.ahead = it, []

    def peek(self) -> dict:
        if not self.ahead:
            self.ahead.append(next(self.it))
        return self.ahead[0]

    def __next__(self) -> dict:
        return self.ahead.pop() if self.ahead else next(self.it)


def take_window(stream: Peekable, size: int, micro_batch: int) -> list[dict]:
    """The next window: `size` samples, or fewer where an epoch ends (filled up to whole micro-batches)."""
    items = [next(stream)]
    while len(items) < size:
        if len(items) % micro_batch == 0 and stream.peek()["epoch"] != items[0]["epoch"]:
            break
        items.append(next(stream))
    return items


def window_seed(seed: int, rank: int, worker: int, epoch: int, consumed: int) -> random.Random:
    """The grouping RNG of the window that starts at (epoch, consumed) in this worker's stream."""
    return random.Random(f"group/{seed}/{rank}/{worker}/{epoch}/{consumed}")


def group_window(lengths: list[int], epochs: list[int], micro_batch: int, rng: random.Random) -> list[list[int]]:
    """Micro-batches (indices into the window) grouped by length, in shuffled order.

    `len(lengths)` is a multiple of `micro_batch`. Samples of a later epoch than the first one (at most
    micro_batch - 1 of them) share the last micro-batch with the shortest leftovers of the first epoch.
    """
    own = [i for i, e in enumerate(epochs) if e == epochs[0]]
    later = [i for i, e in enumerate(epochs) if e != epochs[0]]
    own.sort(key=lambda i: (-lengths[i], i))
    cut = len(own) - (len(own) % micro_batch if later else 0)
    batches = [own[i:i + micro_batch] for i in range(0, cut, micro_batch)]
    rng.shuffle(batches)
    if later:
        batches.append(own[cut:] + later)
    return batches


def padded_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of the computed positions that are padding when each micro-batch is padded to its longest."""
    computed = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / computed
