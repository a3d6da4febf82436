"""Mistral and Phi-3 through `chat_template` (issue 28 item 3): tiny random MistralConfig / Phi3Config models with a
small trained tokenizer carrying a chat template in each family's style (Mistral: `[INST] … [/INST]` and `</s>`;
Phi-3: `<|user|>`/`<|assistant|>` roles, `<|end|>` ends a turn, EOS closes a finished conversation). Label masks hold
the answers and their end-of-turn only; stages 1 → 2 train two steps each with the family's presets."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.training import WORDS

from pipeline.contract.conversation import IGNORE_INDEX, encode, supervised_spans

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning")]
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
           "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
           "{{ message['content'] + eos_token }}{% endif %}{% endfor %}")
PHI3 = ("{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + "
        "'<|end|>\n' }}{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + "
        "'<|end|>\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}"
        "{% else %}{{ eos_token }}{% endif %}")
FAMILIES = {"mistral": (MISTRAL, "</s>", []), "phi3": (PHI3, "<|end|>", ["<|user|>", "<|assistant|>", "<|end|>",
                                                                          "<|endoftext|>"])}
TURNS = [{"from": "human", "value": "<video>\nWhat happened from 10 to 40?"}, {"from": "gpt", "value": "A man walks."},
         {"from": "human", "value": "When does a dog play?"}, {"from": "gpt", "value": "From 40 to 90."}]


def _tokenizer(family: str):
    from infra.tiny_llm import fast_tokenizer
    from train.model import prepare_tokenizer

    template, _, extra = FAMILIES[family]
    tok = fast_tokenizer([" ".join(WORDS)] * 4 + ["What happened from to When does play"], vocab_size=300)
    if extra:
        tok.add_special_tokens({"additional_special_tokens": ["<video>", "<image>", *extra]})
        tok.eos_token = "<|endoftext|>"  # Phi-3's EOS is not its end-of-turn token
    tok.chat_template = template
    return prepare_tokenizer(tok)


@pytest.mark.parametrize("family", FAMILIES)
def test_label_masks_hold_the_answers_and_their_end_of_turn(family):
    from pipeline.contract.stops import answer_stop_ids, template_end_of_turn

    tok = _tokenizer(family)
    end = FAMILIES[family][1]
    enc = encode(TURNS, tok, "chat_template")
    spans = [tok.decode(s).replace(" ", "").replace("\u2581", "") for s in supervised_spans(enc.labels)]
    assert spans == ["Amanwalks." + end, "From40to90." + end]
    assert IGNORE_INDEX in enc.labels and template_end_of_turn(tok) == tok.convert_tokens_to_ids(end)
    # evaluation, chat and an exported model stop at the end of the turn (Phi-3's EOS is another token)
    assert tok.convert_tokens_to_ids(end) in answer_stop_ids(tok, "chat_template")
    supervised = sum(len(s) for s in supervised_spans(enc.labels))
    assert supervised == sum(t != IGNORE_INDEX for t in enc.labels)  # nothing outside the answers


def _tiny_model(family: str, out: Path) -> Path:
    from transformers import MistralConfig, MistralForCausalLM, Phi3Config, Phi3ForCausalLM

    tok = _tokenizer(family)
    size = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    model = MistralForCausalLM(MistralConfig(**size)) if family == "mistral" else Phi3ForCausalLM(Phi3Config(**size))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_stages_1_and_2_train_with_the_family_presets(tmp_path, family):
    from backbone_chain import train_stages

    llm = _tiny_model(family, tmp_path / family)
    ckpts = train_stages(tmp_path, str(llm), [f"{family}_stage1", f"{family}_stage2"])
    meta = json.loads((ckpts[1] / "vtl_checkpoint.json").read_text())
    assert meta["stage"] == 2 and meta["conv_format"] == "chat_template" and meta["adapters"] == ["adapter"]
