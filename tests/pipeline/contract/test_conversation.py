"""Conversation formats and label masks (reference §4.3, §8): decode the supervised tokens, compare with answers."""
from __future__ import annotations

import pytest
from support.models import PLAIN_TURNS, TEXTS, V1_TURNS, slow_tokenizer

from pipeline.contract.conversation import (
    IGNORE_INDEX,
    V1_SYSTEM,
    VIDEO_TOKEN_INDEX,
    encode,
    generation_prompt,
    segments,
    supervised_spans,
)
from train.tiny import train_tokenizer


@pytest.fixture(scope="module", params=["fast", "slow"])
def tok(request):
    return train_tokenizer(TEXTS, vocab_size=400) if request.param == "fast" else slow_tokenizer()


def _check_video(enc):
    assert enc.input_ids.count(VIDEO_TOKEN_INDEX) == 1
    assert enc.labels[enc.input_ids.index(VIDEO_TOKEN_INDEX)] == IGNORE_INDEX
    assert len(enc.input_ids) == len(enc.labels)


def test_v1_supervises_answers_and_eos_only(tok):
    enc = encode(V1_TURNS, tok, "v1")
    _check_video(enc)
    assert enc.input_ids[0] == tok.bos_token_id and enc.labels[0] == IGNORE_INDEX
    spans = supervised_spans(enc.labels)
    assert [tok.decode(s).strip() for s in spans] == [t["value"] + "</s>" for t in V1_TURNS[1::2]]
    assert all(s[-1] == tok.eos_token_id for s in spans)
    # labels equal ids wherever supervised
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(enc.input_ids, enc.labels))
    masked_text = tok.decode([i for i, lab in zip(enc.input_ids, enc.labels) if lab == IGNORE_INDEX and i >= 0],
                             skip_special_tokens=True)
    assert "USER:" in masked_text and "ASSISTANT:" in masked_text and V1_TURNS[2]["value"] in masked_text
    assert "cooks" not in masked_text


def test_v1_answer_ids_match_full_prompt_tokenization(tok):
    """Where it matters (the supervised answers), segment-wise ids equal tokenizing the whole prompt string."""
    q, a = V1_TURNS[0]["value"].replace("<video>", ""), V1_TURNS[1]["value"]
    full = tok(f"{V1_SYSTEM} USER: {q} ASSISTANT: {a}", add_special_tokens=False)["input_ids"]
    answer_ids = supervised_spans(encode(V1_TURNS[:2], tok, "v1").labels)[0][:-1]
    assert full[-len(answer_ids):] == answer_ids
    assert tok.decode(full[:-len(answer_ids)]).rstrip().endswith("ASSISTANT:")


def test_plain_stage1_mask(tok):
    enc = encode(PLAIN_TURNS, tok, "plain")
    _check_video(enc)
    assert enc.input_ids[:2] == [tok.bos_token_id, VIDEO_TOKEN_INDEX]
    assert enc.labels[:2] == [IGNORE_INDEX, IGNORE_INDEX]
    (span,) = supervised_spans(enc.labels)
    assert tok.decode(span).strip(" ") == PLAIN_TURNS[1]["value"] + "\n"
    assert tok.eos_token_id not in enc.input_ids
    # the newline after <video> is part of the prompt, not supervised
    first_supervised = next(i for i, lab in enumerate(enc.labels) if lab != IGNORE_INDEX)
    assert "\n" in tok.decode(enc.input_ids[2:first_supervised])


def test_generation_prompt_is_the_training_prefix(tok):
    prompt = generation_prompt(V1_TURNS[:1], tok, "v1")
    enc = encode(V1_TURNS[:2], tok, "v1")
    assert enc.input_ids[:len(prompt)] == prompt
    assert all(lab == IGNORE_INDEX for lab in enc.labels[:len(prompt)])
    assert tok.decode([i for i in prompt if i >= 0]).rstrip().endswith("ASSISTANT:")
    later = generation_prompt(V1_TURNS[:3], tok, "v1")
    assert later[:len(encode(V1_TURNS[:2], tok, "v1").input_ids)] == enc.input_ids


def test_encode_never_truncates():
    tok = train_tokenizer(TEXTS, vocab_size=400, model_max_length=16)
    long_answer = " ".join(["the dog walks near the river"] * 20)
    enc = encode([V1_TURNS[0], {"from": "gpt", "value": long_answer}], tok, "v1")
    assert len(enc) > 100
    assert tok.decode(supervised_spans(enc.labels)[0]).strip() == long_answer + "</s>"


def test_chatglm3_role_tokens_and_shifted_mask():
    tok = train_tokenizer(TEXTS, vocab_size=400)
    tok.add_special_tokens({"additional_special_tokens": ["[gMASK]", "sop", "<|user|>", "<|assistant|>"]})
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("[gMASK]", "sop", "<|user|>", "<|assistant|>")}
    enc = encode(V1_TURNS, tok, "chatglm3")
    _check_video(enc)
    assert enc.input_ids[:3] == [ids["[gMASK]"], ids["sop"], ids["<|user|>"]]
    assert enc.input_ids[-1] == tok.eos_token_id and enc.labels[-1] == tok.eos_token_id
    for i, token in enumerate(enc.input_ids):
        if token == ids["<|assistant|>"]:
            assert enc.labels[i] == IGNORE_INDEX
    spans = supervised_spans(enc.labels)
    assert spans[0][-1] == ids["<|user|>"]  # the token after an answer is supervised (mask shifted by one)
    assert tok.decode(spans[0][:-1]) == V1_TURNS[1]["value"]
    assert tok.decode(spans[1][:-1]) == V1_TURNS[3]["value"]
    prompt = generation_prompt(V1_TURNS[:1], tok, "chatglm3")
    assert prompt[-1] == ids["<|assistant|>"] and enc.input_ids[:len(prompt)] == prompt


def test_chatglm3_needs_role_tokens():
    with pytest.raises(ValueError, match="no token"):
        encode(V1_TURNS, train_tokenizer(TEXTS, vocab_size=400), "chatglm3")


def test_chat_template_masks_by_rendered_prefixes():
    tok = train_tokenizer(TEXTS, vocab_size=400)
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }}"
                         " [/INST]{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
    enc = encode(V1_TURNS, tok, "chat_template")
    _check_video(enc)
    assert enc.input_ids[0] == tok.bos_token_id
    spans = supervised_spans(enc.labels)
    assert [tok.decode(s).strip() for s in spans] == [t["value"] + "</s>" for t in V1_TURNS[1::2]]
    prompt = generation_prompt(V1_TURNS[:1], tok, "chat_template")
    assert prompt.count(VIDEO_TOKEN_INDEX) == 1 and enc.input_ids[:len(prompt)] == prompt
    assert tok.decode([i for i in prompt if i >= 0]).endswith("[/INST]")


@pytest.mark.parametrize("turns, match", [
    ([{"from": "human", "value": "<video>\nq <video>"}, {"from": "gpt", "value": "a"}], "exactly once"),
    ([{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "exactly once"),
    ([{"from": "gpt", "value": "<video>"}, {"from": "gpt", "value": "a"}], "alternate"),
    ([{"from": "human", "value": "<video>\nq"}], "end with a gpt turn"),
    ([{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}, {"from": "human", "value": "<video>"},
      {"from": "gpt", "value": "b"}], "first human turn"),
])
def test_bad_conversations_raise(turns, match):
    with pytest.raises(ValueError, match=match):
        encode(turns, slow_tokenizer(), "v1")


def test_unknown_format_raises():
    with pytest.raises(ValueError, match="unknown conversation format"):
        segments(V1_TURNS, slow_tokenizer(), "alpaca")


def _tokenizer_for(fmt: str, kind: str):
    from support.training import tokenizer_for_tests

    tok = {"loader": tokenizer_for_tests, "fast": lambda: train_tokenizer(TEXTS, vocab_size=400),
           "slow": slow_tokenizer}[kind]()
    if fmt == "chatglm3":
        tok.add_special_tokens({"additional_special_tokens": ["[gMASK]", "sop", "<|user|>", "<|assistant|>"]})
    if fmt == "chat_template":
        tok.chat_template = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] "
                             "{{ m['content'] }} [/INST]{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}"
                             "{% endfor %}")
    return tok


@pytest.mark.parametrize("kind", ["loader", "fast", "slow"])
@pytest.mark.parametrize("fmt", ["plain", "v1", "chatglm3", "chat_template"])
def test_encode_many_equals_encode_on_every_sample_of_a_shard_set(tmp_path, fmt, kind):
    """The loader's batched tokenization gives exactly `encode`'s ids and label mask, sample by sample."""
    from support.training import write_training_shards

    from pipeline.contract.conversation import encode_many
    from pipeline.contract.shards import iter_samples

    shards = write_training_shards(tmp_path, n=48, stage=1 if fmt == "plain" else 2, per_shard=16, rows=2)
    convs = [s.conversation["turns"] for s in iter_samples(shards)]
    tok = _tokenizer_for(fmt, kind)
    many = encode_many(convs, tok, fmt)
    assert len(many) == len(convs) == 48
    for turns, got in zip(convs, many):
        want = encode(turns, tok, fmt)
        assert got.input_ids == want.input_ids and got.labels == want.labels
    assert encode_many(convs[:1], tok, fmt) == many[:1] and encode_many([], tok, fmt) == []


def test_encode_many_ignores_truncation_set_on_the_backend():
    """`encode` never truncates; the batched path must not pick up a truncation left on the Rust backend."""
    from pipeline.contract.conversation import encode_many

    tok = train_tokenizer(TEXTS, vocab_size=400)
    tok.backend_tokenizer.enable_truncation(3)
    assert encode_many([V1_TURNS], tok, "v1")[0] == encode(V1_TURNS, tok, "v1")
    assert len(encode(V1_TURNS, tok, "v1")) > 20
