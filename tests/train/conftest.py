"""Fixtures the training tests share: the test tokenizer and a set of stage-2 training shards (one per module)."""
import pytest
from support.training import tokenizer_for_tests, write_training_shards


@pytest.fixture(scope="module")
def tok():
    return tokenizer_for_tests()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_training_shards(tmp_path_factory.mktemp("shards"), n=60, stage=2, per_shard=6)
