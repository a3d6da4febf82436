"""Packed micro-batches: the mask and length arithmetic by hand, and packed = unpacked (loss, gradients, logits)."""
from __future__ import annotations

import copy

import pytest
import torch
from support.models import PLAIN_TURNS, TEXTS, V1_TURNS, batch

from pipeline.contract.conversation import IGNORE_INDEX, encode
from train.model import VideoLLM, load_llm, new_projector
from train.packing import attention_inputs, block_causal_mask, sequence_lengths, useful_and_padded
from train.tiny import build_tiny_random


def test_block_causal_mask_by_hand():
    assert block_causal_mask([2, 1, 2])[0, 0].int().tolist() == [[1, 0, 0, 0, 0],
                                                                  [1, 1, 0, 0, 0],
                                                                  [0, 0, 1, 0, 0],
                                                                  [0, 0, 0, 1, 0],
                                                                  [0, 0, 0, 1, 1]]


def test_attention_inputs_per_implementation():
    flash = attention_inputs([3, 1, 4], "flash_attention_2", torch.float32, "cpu")
    assert flash["attention_mask"] is None and flash["cu_seq_lens_q"].tolist() == [0, 3, 4, 8]
    assert flash["cu_seq_lens_q"].dtype == torch.int32 and flash["max_length_k"] == 4
    eager = attention_inputs([1, 1], "eager", torch.float32, "cpu")["attention_mask"][0, 0]
    assert eager[0, 0] == 0 and eager[1, 1] == 0 and eager[1, 0] == torch.finfo(torch.float32).min
    assert attention_inputs([1, 1], "sdpa", torch.float32, "cpu")["attention_mask"].dtype == torch.bool


def test_lengths_and_padding_count_feature_rows():
    ids = torch.tensor([[1, -200, 5, 6], [1, -200, 7, 0], [1, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
    nf = torch.tensor([100, 1, 0])
    assert sequence_lengths(ids, mask, nf).tolist() == [103, 3, 2]  # the third has no video: text only
    b = {"input_ids": ids, "attention_mask": mask, "num_features": nf}
    assert useful_and_padded(b, packed=False) == (108, 3 * 103 - 108)
    assert useful_and_padded(b, packed=True) == (108, 0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-llm")
    build_tiny_random(TEXTS, out_dir=out, seed=0)
    return out


def samples(tok):
    """Four samples of different lengths: video rows (100 and 40), an image row, two formats."""
    encs = [encode(V1_TURNS, tok, "v1"), encode(PLAIN_TURNS, tok, "plain"), encode(V1_TURNS[:2], tok, "v1"),
            encode(PLAIN_TURNS, tok, "plain")]
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(n, 768, generator=gen) for n in (100, 1, 40, 7)]
    ids, mask, labels, feats, nf = batch(encs, feats, pad_id=tok.pad_token_id)
    labels[:, 0] = ids[:, 0]  # a label on the first token: unpacked it is never a target, packed it must not be
    return ids, mask, labels, feats, nf


def loss_and_grads(model, args, pack: bool):
    model.pack = pack
    model.zero_grad()
    out = model(*args)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_gradients_and_logits_equal_unpacked(tiny_dir, attn):
    llm, tok = load_llm(str(tiny_dir), attn=attn)
    model = VideoLLM(llm, tok, new_projector(768, llm.config.hidden_size, seed=0)).double().eval()
    args = samples(tok)
    args = (*args[:3], args[3].double(), args[4])
    padded, want = loss_and_grads(model, args, pack=False)
    packed, got = loss_and_grads(model, args, pack=True)
    assert packed.logits.shape[:2] == (1, int(sequence_lengths(args[0], args[1], args[4]).sum()))
    torch.testing.assert_close(packed.loss, padded.loss, rtol=1e-6, atol=0)  # transformers takes the loss in float32
    assert want.keys() == got.keys() and len(want) == len(list(model.parameters()))
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-9, msg=name)
    start = 0
    for b, n in enumerate(sequence_lengths(args[0], args[1], args[4]).tolist()):  # each sample as if alone
        torch.testing.assert_close(packed.logits[0, start:start + n], padded.logits[b, :n], rtol=1e-9, atol=1e-9)
        start += n


def test_packed_matches_unpacked_in_float32_with_lora(tiny_dir):
    """The training dtype on CPU, through peft's wrapper (stages 2 and 3), in train mode without dropout."""
    from peft import LoraConfig, get_peft_model

    llm, tok = load_llm(str(tiny_dir), attn="sdpa")
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = VideoLLM(get_peft_model(copy.deepcopy(llm), lora), tok, new_projector(768, 64, seed=0)).train()
    args = samples(tok)
    padded, want = loss_and_grads(model, args, pack=False)
    packed, got = loss_and_grads(model, args, pack=True)
    torch.testing.assert_close(packed.loss, padded.loss, rtol=1e-5, atol=1e-6)
    assert any("lora_" in n for n in got) and want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_packing_never_trains_a_sample_to_predict_the_next(tiny_dir):
    llm, tok = load_llm(str(tiny_dir), attn="sdpa")
    model = VideoLLM(llm, tok, new_projector(768, 64, seed=0)).eval()
    model.pack = True
    seen = {}
    handle = model.llm.register_forward_pre_hook(lambda mod, a, kw: seen.update(kw), with_kwargs=True)
    args = samples(tok)
    with torch.no_grad():
        model(*args)
    handle.remove()
    starts = [0, *sequence_lengths(args[0], args[1], args[4]).cumsum(0).tolist()[:-1]]
    assert all(seen["labels"][0, s] == IGNORE_INDEX for s in starts) and (args[2][:, 0] != IGNORE_INDEX).all()
    assert all(seen["position_ids"][0, s] == 0 for s in starts) and seen["position_ids"].shape == seen["labels"].shape
