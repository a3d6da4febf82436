"""GPU: a bf16 stage-2 (LoRA) training step under DeepSpeed ZeRO-2 over NCCL on one GPU, through train.engine.

Batches come from the real loader over small shards; the first bf16 loss must be close to the fp32 CPU loss of the
same model and batch, the LoRA weights must move, and the frozen base must not.
"""
from __future__ import annotations

import copy
import itertools
import os
import types

import pytest
import torch
from support.training import tokenizer_for_tests, write_training_shards

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_bf16_zero2_step_on_nccl(tmp_path):
    deepspeed = pytest.importorskip("deepspeed")
    if deepspeed.get_accelerator().device_name() != "cuda":
        pytest.skip(f"DeepSpeed's accelerator is {deepspeed.get_accelerator().device_name()} "
                    f"(DS_ACCELERATOR={os.environ.get('DS_ACCELERATOR')}); run with DS_ACCELERATOR=cuda")
    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    from train.config import TrainConfig
    from train.data.loader import TrainLoader
    from train.engine import DeepSpeedEngine, init_distributed
    from train.model import VideoLLM, new_projector
    from train.stages import add_lora, select_trainable
    from train.tiny import TINY_SIZE

    init_distributed()
    assert dist.get_backend() == "nccl"
    tok = tokenizer_for_tests()
    shards = write_training_shards(tmp_path / "shards", n=8, stage=2, per_shard=4, rows=100)
    loader = TrainLoader(shards, tokenizer=tok, conv_format="v1", micro_batch=2, max_tokens=512, num_workers=0,
                         buffer=4, seed=0)
    batches = [b for b, _ in itertools.islice(iter(loader), 3)]
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(**TINY_SIZE, vocab_size=len(tok), tie_word_embeddings=False))
    lora = types.SimpleNamespace(lora_r=8, lora_alpha=16, lora_dropout=0.0, seed=0)
    model = VideoLLM(add_lora(llm, lora), tok, new_projector(768, TINY_SIZE["hidden_size"]), "v1")
    select_trainable(model, "lora")
    model.enable_gradient_checkpointing()
    with torch.no_grad():
        ref_loss = copy.deepcopy(model).float()(**batches[0]).loss.item()
    before = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(stage=2, shards=str(shards), llm="tiny-random", out=str(tmp_path / "out"),
                      from_checkpoint=str(tmp_path), micro_batch=2, global_batch=2, zero=2, precision="bf16",
                      lr=1e-3, warmup_ratio=0.0, gradient_checkpointing=True, world_size=1)
    engine = DeepSpeedEngine(model, cfg, total_steps=10)
    assert engine.device.type == "cuda" and engine.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in engine.module.parameters())
    losses = []
    for batch in batches:
        loss = engine.forward({k: v.to(engine.device) for k, v in batch.items()})
        engine.backward(loss)
        assert engine.step()
        losses.append(loss.item())
    print(f"\nbf16 ZeRO-2 NCCL losses {losses}, fp32 CPU first loss {ref_loss:.4f}")
    assert all(torch.isfinite(torch.tensor(losses)))
    assert abs(losses[0] - ref_loss) <= 0.02 * abs(ref_loss)
    after = {n: p.detach().float().cpu() for n, p in engine.module.named_parameters()}
    moved = [n for n in before if "lora_" in n and not torch.equal(before[n].bfloat16().float(), after[n])]
    assert moved, "no LoRA weight changed in three optimizer steps"
    frozen = [n for n in before if "lora_" not in n and not torch.equal(before[n].bfloat16().float(), after[n])]
    assert not frozen, f"frozen weights changed: {frozen[:5]}"
