"""The token cache: tables are reused only when made from the same shard, tokenizer, format and code."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from support.training import WORDS, tokenizer_for_tests, write_training_shards

from train.data import token_cache
from train.data.loader import TrainLoader, index_shards
from train.data.token_cache import TokenCache, build_table, load_table, tokenizer_fingerprint


@pytest.fixture(scope="module")
def tok():
    return tokenizer_for_tests()


@pytest.fixture()
def shards(tmp_path):
    return write_training_shards(tmp_path / "shards", n=12, stage=2, per_shard=4)


def cache_for(tmp_path, tok, fmt="v1"):
    return TokenCache(str(tmp_path / "cache"), tokenizer_fingerprint(tok), fmt)


def same_table(a, b):
    return all(np.array_equal(getattr(a, n), getattr(b, n)) for n in token_cache._ARRAYS) and a.dtypes == b.dtypes


def no_build(*args, **kwargs):
    raise AssertionError("the table was rebuilt instead of read from the cache")


def test_second_load_reads_the_cached_table(tmp_path, shards, tok, monkeypatch):
    shard = index_shards(shards)[0]
    cache = cache_for(tmp_path, tok)
    first = load_table(shard.path, shard.sha256, tok, "v1", cache)
    files = list((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 1 and files[0].name.startswith(os.path.basename(shard.path))
    monkeypatch.setattr(token_cache, "build_table", no_build)
    again = load_table(shard.path, shard.sha256, tok, "v1", cache)
    monkeypatch.undo()
    assert same_table(first, again) and same_table(first, build_table(shard.path, tok, "v1"))
    assert [again.item(i)["key"] for i in range(len(again))] == [f"s{i:05d}" for i in range(4)]


def test_cache_file_says_how_it_was_made(tmp_path, shards, tok):
    shard = index_shards(shards)[0]
    load_table(shard.path, shard.sha256, tok, "v1", cache_for(tmp_path, tok))
    (path,) = (tmp_path / "cache").glob("*.npz")
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes())
    assert meta["recipe"]["shard"]["sha256"] == shard.sha256 and meta["recipe"]["format"] == "v1"
    assert meta["producer"]["name"] == "vtl" and meta["samples"] == 4


def test_other_tokenizer_format_or_shard_content_gets_its_own_table(tmp_path, shards, tok, monkeypatch):
    from train.model import prepare_tokenizer
    from train.tiny import train_tokenizer

    shard = index_shards(shards)[0]
    load_table(shard.path, shard.sha256, tok, "v1", cache_for(tmp_path, tok))
    other = prepare_tokenizer(train_tokenizer(WORDS + ["What happened from to"], vocab_size=200))
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tok)
    load_table(shard.path, shard.sha256, other, "v1", cache_for(tmp_path, other))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    captions = index_shards(write_training_shards(tmp_path / "captions", n=4, stage=1, per_shard=4))[0]
    for fmt in ("plain", "v1"):  # the same caption shard in two formats: two tables, different label masks
        load_table(captions.path, captions.sha256, tok, fmt, cache_for(tmp_path, tok, fmt))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 4

    # The shard rewritten in place (other samples, same name): the old table must not be used.
    rewritten = write_training_shards(shards, n=12, stage=2, per_shard=4, seed=5, rows=3)
    new = index_shards(rewritten)[0]
    assert new.path == shard.path and new.sha256 != shard.sha256
    table = load_table(new.path, new.sha256, tok, "v1", cache_for(tmp_path, tok))
    assert same_table(table, build_table(new.path, tok, "v1")) and table.feature_shape[0].tolist() == [3, 768]


def test_fingerprint_ignores_where_the_tokenizer_was_loaded_from(tmp_path, tok):
    from transformers import AutoTokenizer

    from train.model import prepare_tokenizer

    for d in ("a", "b"):
        tok.save_pretrained(tmp_path / d)
    a, b = (prepare_tokenizer(AutoTokenizer.from_pretrained(tmp_path / d)) for d in ("a", "b"))
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b) == tokenizer_fingerprint(tok)


def test_damaged_cache_file_is_rebuilt(tmp_path, shards, tok, caplog):
    shard = index_shards(shards)[0]
    cache = cache_for(tmp_path, tok)
    good = load_table(shard.path, shard.sha256, tok, "v1", cache)
    (path,) = (tmp_path / "cache").glob("*.npz")
    path.write_bytes(path.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="train.data.token_cache"):
        table = load_table(shard.path, shard.sha256, tok, "v1", cache)
    assert same_table(table, good) and "rebuilding" in caplog.text
    assert same_table(load_table(shard.path, shard.sha256, tok, "v1", cache), good)  # rewritten whole


def test_unwritable_cache_folder_warns_and_training_data_still_flows(tmp_path, shards, tok, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="train.data.token_cache"):
        ld = TrainLoader(shards, tokenizer=tok, conv_format="v1", micro_batch=4, max_tokens=512, num_workers=0,
                         buffer=4, seed=0, token_cache=blocker / "cache")
        it = iter(ld)
        keys = [k for _ in range(3) for k in next(it)[1]]
    assert sorted(keys) == [f"s{i:05d}" for i in range(12)]
    assert caplog.text.count("cannot be written") == 1  # said once, not once per shard
