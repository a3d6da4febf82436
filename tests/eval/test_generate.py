"""Batched generation with a shared video prefix gives exactly the one-at-a-time `transformers.generate` answers."""
import numpy as np
import pytest
import torch

from eval.generate import Query, generate, generate_batch
from pipeline.contract.conversation import generation_prompt
from train.model import VideoLLM, new_projector
from train.tiny import build_tiny_random

SENTENCES = ["a man opens the door", "someone pours water", "a dog runs across the yard", "a child throws a ball"]


@pytest.fixture(scope="module")
def model_and_queries():
    texts = [f"During which frames can we see {s}?" for s in SENTENCES] + [f"From 0{i} to 2{i}." for i in range(10)]
    llm, tok = build_tiny_random(texts * 4, seed=0)
    model = VideoLLM(llm, tok, new_projector(768, llm.config.hidden_size, seed=0), "v1").eval()
    rng = np.random.default_rng(0)
    videos = [rng.standard_normal((100, 768)).astype(np.float16) for _ in range(3)] + \
             [rng.standard_normal((1, 768)).astype(np.float16)]  # an image: a shorter prefix in the same batch
    queries = []
    for i in range(10):
        q = f"During which frames can we see {' and '.join(SENTENCES[i % 4:i % 4 + 1 + i % 3])}?"
        ids = generation_prompt([{"from": "human", "value": f"<video>\n{q}"}], tok, "v1")
        queries.append(Query(ids, videos[i % len(videos)].copy()))  # copies: videos are matched by content
    return model, queries


def one_at_a_time(model, queries, max_new_tokens):
    return [generate_batch(model, [q], max_new_tokens)[0] for q in queries]


def test_shared_prefix_answers_equal_one_at_a_time(model_and_queries):
    model, queries = model_and_queries
    expected = one_at_a_time(model, queries, 12)
    assert generate(model, queries, batch_size=8, max_new_tokens=12) == expected
    assert generate(model, queries, batch_size=32, max_new_tokens=12) == expected
    assert len(set(expected)) > 1  # the answers depend on the query, so the check can fail
    # one new token: the KV cache is sized exactly (prefix + text + 1) and the loop ends before any decode step
    assert generate(model, queries, batch_size=8, max_new_tokens=1) == one_at_a_time(model, queries, 1)


def test_eager_attention_gets_the_padding_mask_it_expects(model_and_queries):
    model, queries = model_and_queries  # SDPA gets a prebuilt 4-D boolean mask; eager adds a float mask it builds
    expected = one_at_a_time(model, queries[:6], 8)
    model.llm.set_attn_implementation("eager")
    try:
        assert model.llm.config._attn_implementation == "eager"
        assert one_at_a_time(model, queries[:6], 8) == expected
        assert generate(model, queries[:6], batch_size=6, max_new_tokens=8) == expected
    finally:
        model.llm.set_attn_implementation("sdpa")


def test_rows_that_stop_early_leave_the_batch_without_changing_others(model_and_queries):
    model, queries = model_and_queries
    tok = model.tokenizer
    first = tok(one_at_a_time(model, queries[:1], 6)[0], add_special_tokens=False).input_ids
    head = model.llm.lm_head.weight
    saved = head[tok.eos_token_id].clone()
    try:
        with torch.no_grad():  # EOS wins wherever a token seen early in answer 0 would: answers end at different steps
            head[tok.eos_token_id] = head[first[min(2, len(first) - 1)]] * 1.05
        expected = one_at_a_time(model, queries, 16)
        lengths = {len(tok(a, add_special_tokens=False).input_ids) for a in expected}
        assert len(lengths) > 1 and min(lengths) < 16
        assert generate(model, queries, batch_size=16, max_new_tokens=16) == expected
    finally:
        with torch.no_grad():
            head[tok.eos_token_id] = saved
