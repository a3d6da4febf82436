"""Streaming training data: split by rank/worker, shuffle buffer, exact resume, over-long samples, collation."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from loader_helpers import loader
from support.training import conversation, write_training_shards

from pipeline.contract.conversation import IGNORE_INDEX, VIDEO_TOKEN_INDEX
from pipeline.contract.shards import Sample, ShardWriter, write_index
from train.data.loader import Shard, ShuffleOrder, collate, ordered_stream, usable_workers, worker_shards


def take(ld, n):
    return list(itertools.islice(iter(ld), n))


def test_shuffle_order_is_a_bounded_permutation():
    order = ShuffleOrder(100, 10, random.Random(0))
    out = []
    for pos in order:
        assert pos < order.read and order.read - len(out) <= 11  # never more than buffer + 1 positions held
        out.append(pos)
    assert sorted(out) == list(range(100)) and out != list(range(100))


def test_ordered_stream_skip_equals_tail(shards, tok):
    from train.data.loader import index_shards
    from train.data.token_cache import build_table

    mine = index_shards(shards)[:4]
    read = []

    def table_of(shard):
        read.append(shard.path)
        return build_table(shard.path, tok, "v1")

    full = [m["key"] for _, m in ordered_stream(mine, 5, random.Random(7), 0, table_of)]
    for skip in (0, 3, 11, 20, 24):
        read.clear()
        tail = [m["key"] for _, m in ordered_stream(mine, 5, random.Random(7), skip, table_of)]
        assert tail == full[skip:]
        if skip == 24:
            assert read == []  # nothing left to yield: no shard is read
    assert sorted(full) == sorted(set(full)) and len(full) == 24


def test_worker_split_is_disjoint_and_complete():
    shards = [Shard(f"s{i}", 1) for i in range(11)]
    parts = [worker_shards(shards, r, 2, w, 3) for r in range(2) for w in range(3)]
    flat = [s.path for p in parts for s in p]
    assert sorted(flat) == sorted(s.path for s in shards) and len(flat) == len(set(flat))
    assert usable_workers(11, 2, 8) == 5
    with pytest.raises(ValueError, match="cannot feed 4 ranks"):
        usable_workers(3, 4, 1)


def test_two_ranks_see_disjoint_data_covering_the_epoch(shards, tok):
    seen = []
    for rank in range(2):
        ld = loader(shards, tok, rank=rank, world=2)
        keys = [k for _, ks in take(ld, 7) for k in ks]  # 28 of the rank's 30 samples
        seen.append(set(keys))
        assert len(keys) == len(set(keys))
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 56


def test_epoch_covers_every_sample_once_then_reshuffles(shards, tok):
    keys = [k for _, ks in take(loader(shards, tok), 30) for k in ks]  # 120 samples = two epochs of 60
    assert sorted(keys[:60]) == sorted(keys[60:]) and len(set(keys[:60])) == 60
    assert keys[:60] != keys[60:]
    two = loader(shards, tok, num_workers=2)  # each worker owns half the shards: no repeat before 56 samples
    keys = [k for _, ks in take(two, 14) for k in ks]
    assert len(set(keys)) == 56 and two.state_dict()["workers"][1]["epoch"] == 0


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("workers,cut", [(0, 5), (0, 15), (2, 7), (2, 16)])
def test_resume_from_state_continues_exactly(shards, tok, workers, cut, group):
    """Cuts inside a grouping window (5, 7, 16) and at its end (15 = the first epoch with one worker)."""
    ref = [ks for _, ks in take(loader(shards, tok, num_workers=workers, group_by_length=group), cut + 6)]
    first = loader(shards, tok, num_workers=workers, group_by_length=group)
    it = iter(first)
    for _ in range(cut):
        next(it)
    state = first.state_dict()
    assert state["samples"] == cut * 4
    resumed = loader(shards, tok, num_workers=workers, state=state, group_by_length=group)
    assert [ks for _, ks in take(resumed, 6)] == ref[cut:]


def test_resume_refuses_a_different_layout(shards, tok):
    ld = loader(shards, tok, num_workers=2)
    take(ld, 2)
    with pytest.raises(ValueError, match="same number of processes"):
        loader(shards, tok, num_workers=2, rank=0, world=2, state=ld.state_dict())
    with pytest.raises(ValueError, match="group-by-length"):
        loader(shards, tok, num_workers=2, state=ld.state_dict(), group_by_length=False)


def test_overlong_samples_are_skipped_and_counted(tmp_path, tok):
    d = write_training_shards(tmp_path / "long", n=20, stage=1, per_shard=5, long_every=4)
    ld = loader(d, tok, conv_format="plain", micro_batch=3)
    keys = [k for _, ks in take(ld, 6) for k in ks][:15]  # the 16th sample opens the second epoch
    assert ld.skipped_long >= 5
    assert not {f"s{i:05d}" for i in range(3, 20, 4)} & set(keys)
    assert len(set(keys)) == 15


def test_collate_pads_right_and_keeps_feature_rows():
    items = [{"input_ids": [1, VIDEO_TOKEN_INDEX, 5, 6], "labels": [IGNORE_INDEX, IGNORE_INDEX, 5, 6],
              "features": np.ones((3, 4), np.float16)},
             {"input_ids": [1, VIDEO_TOKEN_INDEX, 7], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7],
              "features": np.full((1, 4), 2, np.float16)}]
    b = collate(items, pad_id=0)
    assert b["input_ids"].tolist() == [[1, -200, 5, 6], [1, -200, 7, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert b["labels"][1].tolist() == [-100, -100, 7, -100]
    assert b["features"].shape == (2, 3, 4) and b["features"].dtype == torch.float16
    assert b["features"][1, 1:].abs().sum() == 0 and b["num_features"].tolist() == [3, 1]


def test_feature_shards_without_conversation_are_refused(tmp_path, tok):
    with ShardWriter(tmp_path, "feat", samples_per_shard=4) as w:
        for i in range(4):
            w.write(Sample(f"k{i}", np.zeros((2, 8), np.float16), {"key": f"k{i}"}))
    write_index(tmp_path, w.shards, encoder="x", num_frames=2, dim=8, manifest_hash=None)
    with pytest.raises(ValueError, match="no conversation.json"):
        take(loader(tmp_path, tok, micro_batch=1), 1)


@pytest.mark.parametrize("fmt, stage, workers, cached", [("v1", 2, 0, False), ("v1", 2, 2, False),
                                                          ("plain", 1, 0, False), ("v1", 2, 2, True)])
def test_batches_equal_encode_and_collate_of_each_sample(tmp_path, tok, fmt, stage, workers, cached):
    """The worker path (batched tokenization, features read into the batch from their offsets in the shard) gives
    exactly what `encode` + `collate` give for the same samples: ids, label mask, padding, features, row counts.
    With a token cache, the run that fills it and the run that reads it back both do."""
    from pipeline.contract.shards import iter_samples

    rng, gen, d = random.Random(0), np.random.default_rng(0), tmp_path / "s"
    with ShardWriter(d, "train", samples_per_shard=8) as w:
        for i in range(48):  # feature row counts vary, so batches pad features too
            feats = gen.standard_normal((1 + i % 5, 768)).astype(np.float16)
            w.write(Sample(f"s{i:05d}", feats, {"key": f"s{i:05d}"}, conversation(stage, rng)))
    write_index(d, w.shards, encoder="random", num_frames=5, dim=768, manifest_hash=None)
    samples = {s.key: s for s in iter_samples(d)}
    for run in ("fills the cache", "reads it back") if cached else ("uncached",):
        cache = tmp_path / "cache" if cached else None
        ld = loader(d, tok, conv_format=fmt, num_workers=workers, micro_batch=4, token_cache=cache)
        check_epoch(ld, samples, tok, fmt)
        if cached:
            assert len(list(cache.glob("*.npz"))) == 6, run  # one table per shard, written once


def check_epoch(ld, samples, tok, fmt):
    from pipeline.contract.conversation import encode

    seen = []
    for batch, keys in take(ld, 12):  # one epoch: each worker owns 3 shards of 8
        items = []
        for key in keys:
            enc = encode(samples[key].conversation["turns"], tok, fmt)
            items.append({"input_ids": enc.input_ids, "labels": enc.labels, "features": samples[key].features})
        want = collate(items, ld.pad_id)
        assert batch.keys() == want.keys()
        for name in want:
            assert batch[name].dtype == want[name].dtype and torch.equal(batch[name], want[name]), name
        seen += keys
    assert sorted(seen) == sorted(samples)
