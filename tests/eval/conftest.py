"""Fixtures the evaluation tests share: a tiny random checkpoint (one per module) and one torch thread."""
import pytest
import torch
from support.evaluation import tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture
def one_thread():
    # 2 shared cores: oversubscribed intra-op threads make tiny-model generation many times slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
