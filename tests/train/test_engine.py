"""The engine seam: schedule, DeepSpeed config, DeepSpeed (gloo, CPU) vs plain PyTorch on a tiny VideoLLM."""
from __future__ import annotations

import itertools

import pytest
import torch
from support.training import WORDS, write_training_shards

from train.config import TrainConfig
from train.data.loader import TrainLoader
from train.engine import DeepSpeedEngine, TorchEngine, deepspeed_config, init_distributed, warmup_cosine


def test_warmup_cosine_hand_computed():
    assert [warmup_cosine(s, 10, 2) for s in (0, 1, 2, 6, 10, 12)] == [0.0, 0.5, 1.0, pytest.approx(0.5), 0.0, 0.0]
    assert warmup_cosine(0, 5, 0) == 1.0


def cfg(**kw) -> TrainConfig:
    base = dict(stage=1, shards="x", llm="tiny-random", out="o", micro_batch=2, global_batch=4, lr=1e-2,
                warmup_ratio=0.25, zero=2, world_size=1)
    return TrainConfig(**{**base, **kw})


def test_deepspeed_config_follows_the_train_config():
    ds = deepspeed_config(cfg(zero=3, grad_clip=0.5), "fp32")
    assert ds["train_batch_size"] == 4 and ds["gradient_accumulation_steps"] == 2
    assert ds["zero_optimization"]["stage"] == 3 and ds["gradient_clipping"] == 0.5
    assert ds["optimizer"]["params"]["torch_adam"] is True and ds["bf16"]["enabled"] is False
    assert deepspeed_config(cfg(), "bf16")["bf16"]["enabled"] is True


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    from train.model import prepare_tokenizer
    from train.tiny import train_tokenizer

    tok = prepare_tokenizer(train_tokenizer(WORDS, vocab_size=300))
    shards = write_training_shards(tmp_path_factory.mktemp("eng"), n=16, stage=1, per_shard=4)
    ld = TrainLoader(shards, tokenizer=tok, conv_format="plain", micro_batch=2, max_tokens=256, num_workers=0,
                     buffer=4, seed=0)
    return tok, [b for b, _ in itertools.islice(iter(ld), 12)]


def tiny_model(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    from train.model import VideoLLM, new_projector
    from train.tiny import TINY_SIZE

    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(**TINY_SIZE, vocab_size=len(tok), tie_word_embeddings=False))
    llm.requires_grad_(False)
    return VideoLLM(llm, tok, new_projector(768, TINY_SIZE["hidden_size"]), conv_format="plain")


def train(engine, batches) -> tuple[list[float], list[float]]:
    losses, lrs = [], []
    for micro, batch in enumerate(batches, 1):
        loss = engine.forward({k: v.to(engine.device) for k, v in batch.items()})
        engine.backward(loss)
        lr = engine.lr
        if engine.step():
            losses.append(loss.item())
            lrs.append(lr)
    return losses, lrs


def test_deepspeed_and_torch_engines_agree_and_resume(batches, tmp_path):
    tok, data = batches
    init_distributed()
    c = cfg()
    frozen = {n: p.clone() for n, p in tiny_model(tok).llm.named_parameters()}
    ds = DeepSpeedEngine(tiny_model(tok), c, total_steps=6)
    ds_losses, ds_lrs = train(ds, data)
    pt_losses, pt_lrs = train(TorchEngine(tiny_model(tok), c, total_steps=6), data)
    c_torch = cfg(engine="torch")
    first_pt = TorchEngine(tiny_model(tok), c_torch, 6)
    train(first_pt, data[:4])
    first_pt.save(tmp_path / "torch", "step2")
    again_pt = TorchEngine(tiny_model(tok), c_torch, 6)
    assert again_pt.load(tmp_path / "torch") == "step2"
    assert train(again_pt, data[4:])[0] == pytest.approx(pt_losses[2:], rel=1e-6)
    assert len(ds_losses) == 6 and ds_losses == pytest.approx(pt_losses, rel=1e-4)
    assert ds_lrs == pytest.approx(pt_lrs) and ds_lrs[0] == 0.0 and ds_lrs[2] == pytest.approx(1e-2)
    assert all(torch.equal(frozen[n], p) for n, p in ds.module.llm.named_parameters())
    assert ds_losses[-1] < ds_losses[1]

    # Save after 3 optimizer steps, load into a fresh engine: the last 3 losses are the same.
    first = DeepSpeedEngine(tiny_model(tok), c, total_steps=6)
    train(first, data[:6])
    first.save(tmp_path / "engine", "step3")
    again = DeepSpeedEngine(tiny_model(tok), c, total_steps=6)
    assert again.load(tmp_path / "engine") == "step3"
    assert train(again, data[6:])[0] == pytest.approx(ds_losses[3:], rel=1e-6)

