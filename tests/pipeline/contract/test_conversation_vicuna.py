"""Conversation ids and label masks on the real LLaMA-2 / Vicuna tokenizer (issue 13 items 5 and 6).

Expected ids are written by hand from VTimeLLM's rules (reference §4.3): `plain` tokenizes "\\n" + caption + "\\n" after
`<video>` as one chunk and masks BOS, the video and the tokens of "\\n"; `v1` masks through "ASSISTANT:" and supervises
the answer and its "</s>". Both tokenizer kinds (Metaspace "prepend first" and legacy) must give the same ids.
"""
from __future__ import annotations

import json

import pytest
from support.real_data import REAL
from support.real_tokenizer import KINDS, VICUNA_DIR, vicuna_tokenizer

from pipeline.contract.conversation import (
    IGNORE_INDEX,
    V1_SYSTEM,
    VIDEO_TOKEN_INDEX,
    encode,
    encode_many,
    generation_prompt,
    prepends_every_chunk,
    supervised_spans,
)

M = IGNORE_INDEX
V = VIDEO_TOKEN_INDEX


@pytest.fixture(scope="module", params=KINDS)
def tok(request):
    return vicuna_tokenizer(request.param)


def _real_captions(n: int = 300) -> list[str]:
    data = json.loads((REAL / "activitynet_captions_train_sample.json").read_text())
    return [s.strip() for v in data.values() for s in v["sentences"] if s.strip()][:n]


def test_tokenizer_kind_is_detected():
    assert prepends_every_chunk(vicuna_tokenizer("legacy"))
    assert not prepends_every_chunk(vicuna_tokenizer("metaspace"))
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(VICUNA_DIR)  # whichever kind this transformers builds, it is detected
    assert prepends_every_chunk(auto) == (auto(" a", add_special_tokens=False)["input_ids"] == [29871, 263])


def test_plain_caption_is_one_chunk_after_the_newline(tok):
    # "<video>\n" + "A man." + "\n": ▁ <0x0A> (masked, from "\n"), then A ▁man . <0x0A> -- "A" = 29909, not "▁A" = 319
    enc = encode([{"from": "human", "value": "<video>\n"}, {"from": "gpt", "value": "A man."}], tok, "plain")
    assert enc.input_ids == [1, V, 29871, 13, 29909, 767, 29889, 13]
    assert enc.labels == [M, M, M, M, 29909, 767, 29889, 13]
    assert generation_prompt([{"from": "human", "value": "<video>\n"}], tok, "plain") == [1, V, 29871, 13]


def test_v1_single_round_by_hand(tok):
    turns = [{"from": "human", "value": "<video>\nWhen?"}, {"from": "gpt", "value": "From 10 to 25."}]
    system = [1] + tok(V1_SYSTEM + " USER: ", add_special_tokens=False)["input_ids"]
    assert system[1:3] == [319, 13563] and system[-4:] == [3148, 1001, 29901, 29871]  # ▁A ▁chat … ▁US ER : ▁
    question = [29871, 13, 10401, 29973, 319, 1799, 9047, 13566, 29901]  # ▁ <0x0A> When ? ▁A SS IST ANT :
    answer = [3645, 29871, 29896, 29900, 304, 29871, 29906, 29945, 29889, 2]  # ▁From ▁ 1 0 ▁to ▁ 2 5 . </s>
    enc = encode(turns, tok, "v1")
    assert enc.input_ids == system + [V] + question + answer
    assert enc.labels == [M] * (len(system) + 1 + len(question)) + answer


def test_eval_prompts_first_query_token(tok):
    """VTimeLLM's eval sends "<video>\\n " + the dvc query (first token "▁Could") and "<video>\\n" + the grounding one."""
    from eval.runner import query_turn

    dvc = generation_prompt([query_turn("dvc", "Could you please describe the events?")], tok, "v1")
    i = dvc.index(V)
    assert dvc[i + 1:i + 4] == [29871, 13, 6527] and tok.convert_ids_to_tokens(6527) == "\u2581Could"
    ground = generation_prompt([query_turn("grounding", "During which frames can we see a dog?")], tok, "v1")
    j = ground.index(V)
    assert ground[j + 1:j + 5] == [29871, 13, 29928, 3864]  # ▁ <0x0A> D uring: not "▁During" (7133)
    assert tok.convert_ids_to_tokens(7133) == "\u2581During"


def test_both_kinds_give_the_same_ids_on_real_text():
    captions = _real_captions()
    convs = [[{"from": "human", "value": "<video>\n"}, {"from": "gpt", "value": c}] for c in captions]
    dialogues = [[{"from": "human", "value": f"<video>\nWhat happens from {i % 50:02d} to {50 + i % 50:02d}?"},
                  {"from": "gpt", "value": a}, {"from": "human", "value": "During which frames can we see it?"},
                  {"from": "gpt", "value": f"From {i % 50:02d} to {50 + i % 50:02d}."}]
                 for i, a in enumerate(captions)]
    meta, legacy = vicuna_tokenizer("metaspace"), vicuna_tokenizer("legacy")
    for fmt, batch in (("plain", convs), ("v1", dialogues)):
        want = encode_many(batch, meta, fmt)
        assert encode_many(batch, legacy, fmt) == want
        assert [encode(c, legacy, fmt) for c in batch[:20]] == want[:20]


def test_v1_answers_equal_full_prompt_tokens_on_real_text(tok):
    """The supervised ids are what tokenizing the whole prompt gives (the Metaspace kind, as VTimeLLM's)."""
    meta = vicuna_tokenizer("metaspace")
    for caption in _real_captions(50):
        turns = [{"from": "human", "value": "<video>\nDescribe the video."}, {"from": "gpt", "value": caption}]
        full = meta(f"{V1_SYSTEM} USER: \nDescribe the video. ASSISTANT: {caption}</s>",
                    add_special_tokens=False)["input_ids"]
        (span,) = supervised_spans(encode(turns, tok, "v1").labels)
        assert full[-len(span):] == span


def test_plain_supervises_the_chunk_after_the_newline_on_real_text():
    """VTimeLLM's "\\n" + caption + "\\n" chunk, less the two tokens of "\\n" (▁ <0x0A>), is what is supervised."""
    meta = vicuna_tokenizer("metaspace")
    for caption in _real_captions(50):
        (span,) = supervised_spans(encode([{"from": "human", "value": "<video>\n"}, {"from": "gpt", "value": caption}],
                                          meta, "plain").labels)
        assert span == meta("\n" + caption + "\n", add_special_tokens=False)["input_ids"][2:]
