"""build-qa's token budget counts what the trainer trains on: for every conversation format, the budget's positions
equal the trainer's `encode` (and `encode_many`, the loader's path) with the `<video>` sentinel replaced by the
feature rows — with the real LLaMA-2/Vicuna tokenizer and with a tiny trained one."""
from __future__ import annotations

from pathlib import Path

import pytest
from support.models import TEXTS

from manifests.schema import Event
from pipeline.contract.conversation import FORMATS, VIDEO_TOKEN_INDEX, encode, encode_many
from pipeline.qa.budget import TokenBudget
from pipeline.qa.rules import stage1_conversation, stage2_conversation
from train.tiny import train_tokenizer

REAL = Path("/work/shared/data/tokenizers/llama2-vicuna")
CHATGLM_TOKENS = ["[gMASK]", "sop", "<|user|>", "<|assistant|>"]
TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
            "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
EVENTS = [Event(0.0, 4.0, "A man opens the door."), Event(3.0, 9.5, "He walks a dog near the river."),
          Event(10.0, 19.0, "A cat jumps over the fence.")]


def _conversations(fmt: str) -> list[list[dict]]:
    if fmt == "plain":  # one human turn and one caption: stage 1's layout
        return [stage1_conversation(c)["turns"] for c in ("A man walks a dog near the river.", "From 12 to 40.")]
    return [stage2_conversation(EVENTS, 20.0, 0, f"k{i}", dense_ratio=r)["turns"]
            for i, r in enumerate((0.0, 1.0, 0.0, 0.5))]


def _folder(tmp_path: Path, name: str) -> Path:
    """A tokenizer folder that every format can encode with: the chatglm3 role tokens and a chat template added."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(REAL)) if name == "real" else train_tokenizer(TEXTS, vocab_size=400)
    tok.add_special_tokens({"additional_special_tokens": CHATGLM_TOKENS})
    tok.chat_template = TEMPLATE
    out = tmp_path / name
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module", params=["real", "tiny"])
def folder(request, tmp_path_factory):
    if request.param == "real" and not (REAL / "tokenizer.json").is_file():
        pytest.skip(f"the real tokenizer is not at {REAL}")
    return _folder(tmp_path_factory.mktemp("tok"), request.param)


@pytest.mark.parametrize("fmt", FORMATS)
def test_budget_counts_the_trainers_encoding(folder, fmt):
    from transformers import AutoTokenizer

    budget = TokenBudget(folder, 2048, fmt)
    trainer_tok = AutoTokenizer.from_pretrained(str(folder))  # as train.model.load_llm loads it
    convs = _conversations(fmt)
    many = encode_many(convs, trainer_tok, fmt)
    for turns, enc_many, rows in zip(convs, many, (100, 1, 37, 100)):
        enc = encode(turns, trainer_tok, fmt)
        assert enc.input_ids.count(VIDEO_TOKEN_INDEX) == 1
        assert enc_many.input_ids == enc.input_ids
        assert budget.positions(turns, rows) == len(enc) - 1 + rows


def test_real_tokenizer_v1_count_by_hand():
    """A hand check on the real tokenizer: v1 = BOS + system + " USER: " + q + " ASSISTANT:" + " " + a + EOS."""
    if not (REAL / "tokenizer.json").is_file():
        pytest.skip(f"the real tokenizer is not at {REAL}")
    from pipeline.contract.conversation import V1_SYSTEM

    budget = TokenBudget(REAL, 2048, "v1")
    tok = budget.tokenizer
    turns = [{"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "From 10 to 25."}]
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]
    # BOS, the text before and after the video sentinel, the answer with its leading space, EOS
    text = [V1_SYSTEM + " USER: ", "\nWhat happens? ASSISTANT:", " From 10 to 25."]
    expected = 1 + sum(len(ids(t)) for t in text) + 1
    assert budget.positions(turns, 100) == expected + 100


def test_budget_refuses_an_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="token-budget format"):
        TokenBudget(tmp_path, 2048, "alpaca")
