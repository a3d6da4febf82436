"""Length-grouped micro-batches: the window arithmetic by hand, and the loader's grouped epochs."""
from __future__ import annotations

import itertools
import random

import pytest
from loader_helpers import loader

from train.data.grouping import Peekable, group_window, padded_fraction, take_window


def test_group_window_sorts_cuts_and_shuffles_batches():
    lengths = [5, 1, 9, 3, 7, 2]
    batches = group_window(lengths, [0] * 6, 2, random.Random(0))
    assert sorted(batches) == [[0, 3], [2, 4], [5, 1]]  # longest first within a batch: (9, 7), (5, 3), (2, 1)
    orders = {tuple(map(tuple, group_window(lengths, [0] * 6, 2, random.Random(s)))) for s in range(20)}
    assert len(orders) > 1  # the batch order follows the seed
    assert padded_fraction(lengths, batches) == pytest.approx(1 - 27 / 32)  # computed 2·9 + 2·5 + 2·2 = 32


def test_group_window_puts_the_epoch_straddling_batch_last():
    batches = group_window([5, 1, 9, 3, 7, 2], [0, 0, 0, 0, 0, 1], 2, random.Random(0))
    assert sorted(batches[:2]) == [[0, 3], [2, 4]] and batches[2] == [1, 5]


def test_take_window_stops_at_the_epoch_end_on_a_whole_micro_batch():
    def stream(epochs):
        return Peekable(iter([{"epoch": e, "i": i} for i, e in enumerate(epochs)]))

    assert [it["i"] for it in take_window(stream([0, 0, 0, 1, 1, 1, 1, 1]), 6, 2)] == [0, 1, 2, 3]
    assert [it["i"] for it in take_window(stream([0, 0, 1, 1, 1, 1, 1, 1]), 6, 2)] == [0, 1]
    assert [it["i"] for it in take_window(stream([0] * 8), 6, 2)] == [0, 1, 2, 3, 4, 5]
    s = stream([0, 0] + [1] * 7)
    assert len(take_window(s, 6, 2)) == 2 and [it["i"] for it in take_window(s, 6, 2)] == [2, 3, 4, 5, 6, 7]


def epoch_batches(ld, n):
    return list(itertools.islice(iter(ld), n))


def lengths_of(batch):
    return (batch["attention_mask"].sum(1) + batch["num_features"] - 1).tolist()


@pytest.mark.parametrize("workers", [0, 2])
def test_grouped_epoch_pads_less_and_covers_every_sample_once(shards, tok, workers):
    n = 15 if workers == 0 else 14  # two workers own 30 samples each: their 8th batch takes 2 of the next epoch
    grouped = epoch_batches(loader(shards, tok, num_workers=workers), n)
    plain = epoch_batches(loader(shards, tok, num_workers=workers, group_by_length=False), n)

    def padding(batches):
        return sum(b["attention_mask"].numel() - int(b["attention_mask"].sum()) for b, _ in batches)

    assert padding(grouped) < padding(plain) / 2
    for batches in (grouped, plain):
        keys = [k for _, ks in batches for k in ks]
        assert len(set(keys)) == len(keys) == 4 * n
    if workers == 0:  # with two, the grouped run leaves each worker's 2 shortest samples for the 8th batch
        assert {k for _, ks in grouped for k in ks} == {k for _, ks in plain for k in ks}
    lengths = [lengths_of(b) for b, _ in grouped]
    assert all(ls == sorted(ls, reverse=True) for ls in lengths)
    longest = [max(ls) for ls in lengths]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)  # batches in shuffled order


def test_grouping_is_deterministic_and_follows_the_seed(shards, tok):
    def keys(**kw):
        return [ks for _, ks in epoch_batches(loader(shards, tok, **kw), 15)]

    assert keys() == keys()
    assert keys() != keys(seed=4)
