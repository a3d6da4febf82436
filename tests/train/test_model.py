"""VideoLLM: features are spliced at the `<video>` sentinel, labels ignored there, padding handled, tiny-random LLM."""
from __future__ import annotations

import pytest
import torch
from support.models import PLAIN_TURNS, TEXTS, V1_TURNS, batch

from pipeline.contract.conversation import IGNORE_INDEX, VIDEO_TOKEN_INDEX, encode
from train.model import VideoLLM, attention_implementation, load_llm, new_projector
from train.tiny import build_tiny_random


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-llm")
    llm, tok = build_tiny_random(TEXTS, out_dir=out, seed=0)
    model = VideoLLM(llm, tok, new_projector(768, llm.config.hidden_size, seed=0)).eval()
    return model, out


def _captured_llm_kwargs(model, *args):
    seen = {}
    handle = model.llm.register_forward_pre_hook(lambda mod, a, kw: seen.update(kw), with_kwargs=True)
    try:
        out = model(*args)
    finally:
        handle.remove()
    return out, seen


def test_features_replace_the_sentinel(tiny):
    model, _ = tiny
    enc = encode(V1_TURNS[:2], model.tokenizer, "v1")
    p = enc.input_ids.index(VIDEO_TOKEN_INDEX)
    feats = torch.randn(1, 100, 768)
    out, seen = _captured_llm_kwargs(model, *batch([enc], [feats[0]]))
    assert out.logits.shape[1] == len(enc) - 1 + 100
    assert seen["inputs_embeds"].shape[1] == len(enc) + 99
    labels = seen["labels"][0]
    assert (labels[p:p + 100] == IGNORE_INDEX).all()
    # text labels kept in order around the feature rows
    assert labels[:p].tolist() == enc.labels[:p] and labels[p + 100:].tolist() == enc.labels[p + 1:]
    expected_rows = model.projector(feats[0])
    assert torch.allclose(seen["inputs_embeds"][0, p:p + 100], expected_rows)
    assert torch.isfinite(out.loss)

    changed = feats.clone()
    changed[0, 50] += 1.0
    with torch.no_grad():
        base = model(*batch([enc], [feats[0]])).logits
        moved = model(*batch([enc], [changed[0]])).logits
    diff = (base - moved).abs().amax(dim=-1)[0]
    assert diff[:p + 50].max() == 0  # causal: nothing before the changed row moves
    assert diff[p + 50:].min() > 0  # every position from the changed row on does


def test_padding_and_image_rows(tiny):
    model, _ = tiny
    long = encode(V1_TURNS, model.tokenizer, "v1")
    short = encode(PLAIN_TURNS, model.tokenizer, "plain")
    f_video, f_image = torch.randn(100, 768), torch.randn(1, 768)
    with torch.no_grad():
        both = model(*batch([long, short], [f_video, f_image])).logits
        alone = model(*batch([short], [f_image])).logits
    n = len(short)  # one image row replaces the sentinel: same length
    assert alone.shape[1] == n
    assert torch.allclose(both[1, :n], alone[0], atol=1e-5)


def test_left_padding_is_refused(tiny):
    model, _ = tiny
    encs = [encode(V1_TURNS, model.tokenizer, "v1"), encode(PLAIN_TURNS, model.tokenizer, "plain")]
    ids, mask, labels, feats, nf = batch(encs, [torch.randn(100, 768), torch.randn(1, 768)])
    assert not mask[1].all()
    with pytest.raises(ValueError, match="right-padded"):
        model(ids, mask.flip(1), labels, feats, nf)


def test_embed_matches_forward(tiny):
    model, _ = tiny
    enc = encode(V1_TURNS[:2], model.tokenizer, "v1")
    feats = torch.randn(100, 768)
    _, seen = _captured_llm_kwargs(model, *batch([enc], [feats]))
    assert torch.allclose(model.embed(enc.input_ids, feats), seen["inputs_embeds"][0])


def test_projector_receives_gradients_with_frozen_llm(tiny):
    model, _ = tiny
    model.llm.requires_grad_(False)
    enc = encode(PLAIN_TURNS, model.tokenizer, "plain")
    loss = model(*batch([enc], [torch.randn(1, 768)])).loss
    loss.backward()
    assert model.projector.weight.grad is not None and model.projector.weight.grad.abs().sum() > 0
    model.projector.zero_grad()


def test_tiny_random_reload_is_exact_and_seeded(tiny, tmp_path):
    model, out = tiny
    llm2, tok2 = load_llm(str(out), attn="sdpa")
    ids = torch.tensor([model.tokenizer("a dog near the river")["input_ids"]])
    assert tok2("a dog near the river")["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        assert torch.equal(model.llm(ids).logits, llm2(ids).logits)
    again, _ = build_tiny_random(TEXTS, seed=0)
    other, _ = build_tiny_random(TEXTS, seed=1)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, llm2(ids).logits)
        assert not torch.equal(other(ids).logits, llm2(ids).logits)
    tokens = {t: tok2.convert_tokens_to_ids(t) for t in ("<unk>", "<s>", "</s>", "<pad>", "<video>", "<image>")}
    assert len(set(tokens.values())) == 6


def test_attention_choice_on_cpu():
    if not torch.cuda.is_available():
        assert attention_implementation("auto") == "sdpa"
        with pytest.raises(RuntimeError, match="flash_attention_2 was requested"):
            attention_implementation("flash_attention_2")
    assert attention_implementation("eager") == "eager"
    with pytest.raises(ValueError):
        attention_implementation("flex")


def test_projector_size_must_match(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="hidden size"):
        VideoLLM(model.llm, model.tokenizer, new_projector(768, 7))


def test_gradient_checkpointing_keeps_projector_gradients(tmp_path):
    llm, tok = build_tiny_random(TEXTS, seed=0)
    model = VideoLLM(llm, tok, new_projector(768, llm.config.hidden_size)).train()
    model.llm.requires_grad_(False)
    model.enable_gradient_checkpointing()
    assert model.llm.model.gradient_checkpointing
    enc = encode(V1_TURNS, tok, "v1")
    model(*batch([enc], [torch.randn(100, 768)])).loss.backward()
    assert model.projector.weight.grad.abs().sum() > 0


_FINGERPRINT = """
import hashlib, sys
sys.path[:0] = [{root!r}, {root!r} + "/tests"]
from support.models import TEXTS
from train.tiny import train_bpe
print(hashlib.md5(train_bpe(TEXTS).to_str().encode()).hexdigest())
"""


def test_tiny_tokenizer_is_identical_in_another_process():
    """Every rank trains the tiny-random tokenizer itself (only rank 0 saves it): the result must not depend on the
    process (hash seeds); the weights come from a fixed torch seed."""
    import hashlib
    import os
    import subprocess
    import sys
    from pathlib import Path

    from train.tiny import train_bpe

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", _FINGERPRINT.format(root=root)], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == hashlib.md5(train_bpe(TEXTS).to_str().encode()).hexdigest()
