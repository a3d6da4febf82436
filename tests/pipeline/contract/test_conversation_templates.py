"""Chat-template label masks with the real LLaMA-3.1 and Qwen3 tokenizers (shared/data/tokenizers): answers and their
end-of-turn token supervised, nothing else; Qwen3's template rewrites earlier turns (it drops their <think> blocks),
so its rendering is not prefix-stable and the replies are located in the full rendering."""
from __future__ import annotations

import pytest
from support.real_tokenizer import VICUNA_DIR

from pipeline.contract.conversation import (
    IGNORE_INDEX,
    VIDEO_PLACEHOLDER,
    VIDEO_TOKEN_INDEX,
    encode,
    encode_many,
    generation_prompt,
    supervised_spans,
)

TOKENIZERS = VICUNA_DIR.parent
END_OF_TURN = {"qwen3": "<|im_end|>", "llama3.1": "<|eot_id|>"}
TURNS = [{"from": "human", "value": "<video>\nWhat does the man do in the kitchen?"},
         {"from": "gpt", "value": "He chops onions, from <s0> to <e0>, then fries them."},
         {"from": "human", "value": "When does he taste the sauce?"},
         {"from": "gpt", "value": "At <s1> until <e1>.\nHe adds salt afterwards."},
         {"from": "human", "value": "Is anyone else there?"},
         {"from": "gpt", "value": "No, he is alone."}]


def _tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZERS / name)


def _rendered(tok, turns, generation: bool) -> str:
    messages = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]} for t in turns]
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation, enable_thinking=False)


def _whole_ids(tok, text: str) -> list[int]:
    """The rendering tokenized in one piece on each side of `<video>` (the sentinel goes between, as in training)."""
    before, after = text.split(VIDEO_PLACEHOLDER)
    return (tok(before, add_special_tokens=False)["input_ids"] + [VIDEO_TOKEN_INDEX]
            + tok(after, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("name", ["qwen3", "llama3.1"])
@pytest.mark.parametrize("rounds", [1, 3])
def test_answers_and_end_of_turn_are_supervised_and_nothing_else(name, rounds):
    tok = _tokenizer(name)
    turns = TURNS[:2 * rounds]
    enc = encode(turns, tok, "chat_template")
    eot = END_OF_TURN[name]
    assert enc.input_ids.count(VIDEO_TOKEN_INDEX) == 1
    assert [tok.decode(s) for s in supervised_spans(enc.labels)] == [t["value"] + eot for t in turns[1::2]]
    assert all(lab in (IGNORE_INDEX, i) for lab, i in zip(enc.labels, enc.input_ids))
    # The pieces tokenized one by one give the ids of the whole rendering tokenized at once.
    assert enc.input_ids == _whole_ids(tok, _rendered(tok, turns, False))
    assert encode_many([turns], tok, "chat_template")[0] == enc


def test_qwen3_renders_the_empty_think_block_only_in_the_last_turn_and_never_supervises_it():
    tok = _tokenizer("qwen3")
    enc = encode(TURNS, tok, "chat_template")
    think = tok.convert_tokens_to_ids("<think>")
    assert enc.input_ids.count(think) == 1  # the template keeps it before the last answer only
    position = enc.input_ids.index(think)
    # "<|im_start|>assistant\n" + "<think>" "\n\n" "</think>" "\n\n" stay unsupervised; the answer starts right after.
    assert enc.labels[position - 3:position + 4] == [IGNORE_INDEX] * 7 and enc.labels[position + 4] != IGNORE_INDEX
    # At generation the prompt ends with the same empty block, so the model continues with the answer itself.
    prompt = generation_prompt(TURNS[:5], tok, "chat_template")
    assert enc.input_ids[:len(prompt)] == prompt
    assert tok.decode(prompt[-4:]) == "<think>\n\n</think>\n\n"


def test_llama31_generation_prompt_extends_the_training_history():
    tok = _tokenizer("llama3.1")
    enc = encode(TURNS, tok, "chat_template")
    for k in (1, 3, 5):
        prompt = generation_prompt(TURNS[:k], tok, "chat_template")
        assert enc.input_ids[:len(prompt)] == prompt
        assert tok.decode(prompt[-4:]) == "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert enc.input_ids[0] == tok.convert_tokens_to_ids("<|begin_of_text|>")


def test_a_template_that_renders_answers_differently_in_context_raises():
    """A template that rewrites an earlier answer (here: upper-cases it) has no derivable mask: one clear error."""
    tok = _tokenizer("llama3.1")
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{% if m['role'] == 'assistant' and not loop.last %}"
                         "{{ m['content'] | upper }}{% else %}{{ m['content'] }}{% endif %}<|eot_id|>{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    with pytest.raises(ValueError, match="renders an assistant turn differently"):
        encode(TURNS[:4], tok, "chat_template")
