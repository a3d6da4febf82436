"""ChatGLM3 as released, converted to transformers' GLM without running its code: a tiny random checkpoint under
ChatGLM's weight names, a reference forward pass written here from ChatGLM3's architecture, and a SentencePiece
tokenizer with ChatGLM's nine special tokens appended (issue 28 item 1)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from train.chatglm import CHATGLM_SPECIAL_TOKENS, convert_chatglm3, is_chatglm3, load_chatglm3

CONFIG = {"model_type": "chatglm", "architectures": ["ChatGLMModel"],
          "auto_map": {"AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration"},
          "num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 96, "kv_channels": 16, "num_attention_heads": 4,
          "multi_query_attention": True, "multi_query_group_num": 2, "padded_vocab_size": 0, "seq_length": 256,
          "layernorm_epsilon": 1e-5, "rmsnorm": True, "add_qkv_bias": True, "add_bias_linear": False,
          "post_layer_norm": True, "apply_residual_connection_post_layernorm": False, "original_rope": True,
          "rope_ratio": 1, "torch_dtype": "float32", "eos_token_id": 2, "pad_token_id": 0}
WORDS = ("the man opens a door and walks into the kitchen then he chops onions isopropyl sopping mesopotamia "
         "lasso pot top soprano eopsis peop").split()


def _train_spm(folder, vocab_size=340) -> int:
    import random

    import sentencepiece as spm

    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(400)]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(folder / "tokenizer"),
                                   vocab_size=vocab_size, model_type="bpe", byte_fallback=True,
                                   character_coverage=1.0, minloglevel=2)
    return vocab_size


def _chatglm_weights(cfg: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    h, hd, heads, groups, ffn = (cfg["hidden_size"], cfg["kv_channels"], cfg["num_attention_heads"],
                                 cfg["multi_query_group_num"], cfg["ffn_hidden_size"])

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    w = {"transformer.embedding.word_embeddings.weight": rand(cfg["padded_vocab_size"], h, scale=1.0),
         "transformer.encoder.final_layernorm.weight": 1 + rand(h),
         "transformer.output_layer.weight": rand(cfg["padded_vocab_size"], h),
         "transformer.rotary_pos_emb.inv_freq": torch.zeros(hd // 4)}
    qkv = heads * hd + 2 * groups * hd
    for i in range(cfg["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        w.update({p + "input_layernorm.weight": 1 + rand(h), p + "post_attention_layernorm.weight": 1 + rand(h),
                  p + "self_attention.query_key_value.weight": rand(qkv, h),
                  p + "self_attention.query_key_value.bias": rand(qkv),
                  p + "self_attention.dense.weight": rand(h, heads * hd),
                  p + "mlp.dense_h_to_4h.weight": rand(2 * ffn, h), p + "mlp.dense_4h_to_h.weight": rand(h, ffn)})
    return w


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A tiny ChatGLM3 folder in the released layout (config.json, safetensors under ChatGLM names, tokenizer.model,
    and a code file that must never run)."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("chatglm3")
    sp_size = _train_spm(folder)
    cfg = dict(CONFIG, padded_vocab_size=sp_size + len(CHATGLM_SPECIAL_TOKENS) + 7)
    (folder / "config.json").write_text(json.dumps(cfg))
    weights = _chatglm_weights(cfg)
    save_file(weights, folder / "model.safetensors")
    (folder / "modeling_chatglm.py").write_text("raise RuntimeError('downloaded code ran')\n")
    return folder, cfg, weights


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _chatglm_rope(x, positions, rope_ratio):
    """ChatGLM3: rotary on the first half of each head, pairs (2j, 2j+1) rotated by base^(-2j / (head_dim / 2))."""
    hd = x.shape[-1]
    rot = hd // 2
    theta = 1.0 / (10000.0 * rope_ratio) ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot)
    angle = positions[:, None].float() * theta[None]  # (seq, rot/2)
    cos, sin = angle.cos()[:, None], angle.sin()[:, None]  # broadcast over heads: x is (seq, heads, hd)
    pairs = x[..., :rot].reshape(*x.shape[:-1], rot // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([even * cos - odd * sin, odd * cos + even * sin], -1).flatten(-2)
    return torch.cat([rotated, x[..., rot:]], -1)


def _reference_logits(w: dict, cfg: dict, ids: list[int]) -> torch.Tensor:
    """ChatGLM3's forward pass for one sequence, from its architecture (fp32)."""
    heads, groups, hd, eps = (cfg["num_attention_heads"], cfg["multi_query_group_num"], cfg["kv_channels"],
                              cfg["layernorm_epsilon"])
    n = len(ids)
    pos = torch.arange(n)
    x = w["transformer.embedding.word_embeddings.weight"][torch.tensor(ids)]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    for i in range(cfg["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        ln = _rms(x, w[p + "input_layernorm.weight"], eps)
        qkv = ln @ w[p + "self_attention.query_key_value.weight"].T + w[p + "self_attention.query_key_value.bias"]
        q, k, v = qkv.split([heads * hd, groups * hd, groups * hd], -1)
        q = _chatglm_rope(q.view(n, heads, hd), pos, cfg["rope_ratio"])
        k = _chatglm_rope(k.view(n, groups, hd), pos, cfg["rope_ratio"])
        v = v.view(n, groups, hd)
        # Multi-query attention: head h reads key/value group h // (heads / groups).
        k = k.repeat_interleave(heads // groups, dim=1)
        v = v.repeat_interleave(heads // groups, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
        scores = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        attn = torch.einsum("hqk,khd->qhd", scores, v).reshape(n, heads * hd)
        x = x + attn @ w[p + "self_attention.dense.weight"].T
        ln = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        gate, up = (ln @ w[p + "mlp.dense_h_to_4h.weight"].T).chunk(2, -1)
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.dense_4h_to_h.weight"].T
    x = _rms(x, w["transformer.encoder.final_layernorm.weight"], eps)
    return x @ w["transformer.output_layer.weight"].T


def test_converted_glm_logits_equal_the_chatglm3_reference(released):
    folder, cfg, weights = released
    assert is_chatglm3(str(folder))
    model, _ = load_chatglm3(str(folder), attn="eager")
    assert type(model).__name__ == "GlmForCausalLM" and model.config.num_key_value_heads == 2
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg["padded_vocab_size"], (2, 23), generator=g)
    with torch.no_grad():
        got = model(input_ids=ids).logits
    for b in range(2):
        want = _reference_logits(weights, cfg, ids[b].tolist())
        assert want.abs().max() > 1  # the comparison below is not between near-zero tensors
        torch.testing.assert_close(got[b], want, rtol=1e-5, atol=1e-5)


def _chatglm3_ids(sp, text: str) -> list[int]:
    """ChatGLM3's tokenizer: SentencePiece pieces; a piece named like a special token gets the special id."""
    special = {name: sp.get_piece_size() + i for i, name in enumerate(CHATGLM_SPECIAL_TOKENS)}
    return [special.get(piece, sp.piece_to_id(piece)) for piece in sp.encode(text, out_type=str)]


def test_fast_tokenizer_gives_chatglm3_ids(released):
    import sentencepiece as spm

    folder, _, _ = released
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    _, tok = load_chatglm3(str(folder))
    texts = ["the man opens a door", "isopropyl sopping in mesopotamia", "  two  spaces\nand a newline",
             "unknown ünïcödé 字 and digits 123", "sop eop [gMASK] <|user|>", "soprano peop lasso pot top", "doorsop tsopping teop manseop"]
    pieces = {p for t in texts for p in sp.encode(t, out_type=str)}
    assert {"sop", "eop"} <= pieces  # mid-word pieces named like special tokens: the remapping is exercised
    for text in texts:
        assert tok(text, add_special_tokens=False)["input_ids"] == _chatglm3_ids(sp, text), text
    for offset, name in enumerate(CHATGLM_SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(name) == sp.get_piece_size() + offset
    assert tok.eos_token_id == sp.eos_id() == 2 and tok.decode(_chatglm3_ids(sp, "the man opens")) == "the man opens"


def test_convert_writes_a_folder_that_loads_natively(released, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, cfg, weights = released
    out = convert_chatglm3(str(folder), str(tmp_path / "glm"))
    assert json.loads((out / "config.json").read_text())["model_type"] == "glm" and not is_chatglm3(str(out))
    model = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("the man chops onions", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        got = model(input_ids=torch.tensor([ids])).logits[0]
    torch.testing.assert_close(got, _reference_logits(weights, cfg, ids), rtol=1e-5, atol=1e-5)
    assert tok.convert_tokens_to_ids("<|assistant|>") == load_chatglm3(str(folder))[1].convert_tokens_to_ids(
        "<|assistant|>")


def test_load_llm_converts_a_released_folder_and_glm_picks_the_chatglm3_format(released):
    from pipeline.contract.conversation import encode, supervised_spans
    from train.chatglm import default_conv_format
    from train.model import load_llm

    folder, _, _ = released
    llm, tok = load_llm(str(folder), attn="sdpa")  # the folder's modeling_chatglm.py raises if anything runs it
    assert type(llm).__name__ == "GlmForCausalLM" and tok.padding_side == "right" and tok.pad_token_id == 0
    assert default_conv_format(llm, tok, "v1") == "chatglm3" and default_conv_format(llm, tok, "plain") == "plain"
    turns = [{"from": "human", "value": "<video>\nwhat happens"}, {"from": "gpt", "value": "the man chops onions"}]
    enc = encode(turns, tok, "chatglm3")
    assert enc.input_ids[:3] == [tok.convert_tokens_to_ids(t) for t in ("[gMASK]", "sop", "<|user|>")]
    assert tok.decode(supervised_spans(enc.labels)[0]) == "the man chops onions</s>"
