"""The training loader streaming shards from s3:// (the local S3 server): the same batches as from local disk,
headers walked and features fetched by ranged reads, the token cache kept local."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from support.training import conversation, tokenizer_for_tests

from infra import storage
from pipeline.contract.shard_refs import iter_sample_refs
from pipeline.contract.shards import Sample, ShardWriter, iter_samples, iter_tar_members, write_index
from train.data.loader import TrainLoader


def _write(d, n=24):
    rng, gen = random.Random(0), np.random.default_rng(0)
    with ShardWriter(d, "train", samples_per_shard=8) as w:
        for i in range(n):
            feats = gen.standard_normal((1 + i % 5, 768)).astype(np.float16)
            w.write(Sample(f"s{i:05d}", feats, {"key": f"s{i:05d}"}, conversation(2, rng)))
    write_index(d, w.shards, encoder="random", num_frames=5, dim=768, manifest_hash=None)


@pytest.mark.parametrize("workers, cached", [(0, False), (2, True)])
def test_loader_streams_s3_shards_like_local_ones(s3, tmp_path, workers, cached):
    _write(tmp_path / "local")
    _write(f"{s3}/train")
    remote = f"{s3}/train/train-000000.tar"
    assert [{k: v for k, v in m.items() if k != "features.npy"} for m in iter_sample_refs(remote)] == \
        [{k: v for k, v in m.items() if k != "features.npy"} for m in iter_tar_members(remote)]
    tok = tokenizer_for_tests()
    batches = {}
    for name, where in (("local", str(tmp_path / "local")), ("s3", f"{s3}/train")):
        cache = str(tmp_path / f"cache-{name}") if cached else None
        ld = TrainLoader(where, tokenizer=tok, conv_format="v1", micro_batch=4, max_tokens=512,
                         num_workers=workers, buffer=5, seed=3, token_cache=cache)
        batches[name] = [(keys, b) for b, keys in itertools.islice(iter(ld), 6)]  # one epoch: 24 samples / 4
    assert [k for k, _ in batches["s3"]] == [k for k, _ in batches["local"]]
    for (_, a), (_, b) in zip(batches["local"], batches["s3"]):
        assert all((a[n] == b[n]).all() for n in a)
    assert not storage.is_remote(str(tmp_path)) and len({s.key for s in iter_samples(f"{s3}/train")}) == 24
