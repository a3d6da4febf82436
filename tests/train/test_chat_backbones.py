"""Modern chat backbones through `chat_template`: tiny random Qwen3 and LLaMA-3.1 models with their real tokenizers
(shared/data/tokenizers) train stage 1 then stage 2; Qwen3's template is not prefix-stable (issue 28 item 3)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _train_helpers import write_training_shards

from pipeline.contract.conversation import IGNORE_INDEX, encode, supervised_spans
from tests._real_tokenizer import VICUNA_DIR
from train.config import resolve_config

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]
END_OF_TURN = {"qwen3": "<|im_end|>", "llama3.1": "<|eot_id|>"}


def _tiny_backbone(name: str, out: Path) -> Path:
    """A tiny random model of the tokenizer's architecture, saved with the real tokenizer files."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(VICUNA_DIR.parent / name)
    size = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=2048,
                eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    model = (Qwen3ForCausalLM(Qwen3Config(**size)) if name == "qwen3"
             else LlamaForCausalLM(LlamaConfig(**size, tie_word_embeddings=False)))
    model.save_pretrained(out)
    for f in (VICUNA_DIR.parent / name).iterdir():
        if f.name.startswith("tokenizer"):
            shutil.copy(f, out / f.name)
    return out


@pytest.mark.parametrize("name", ["qwen3", "llama3.1"])
def test_stages_1_and_2_train_with_the_real_tokenizer(tmp_path, name):
    from train.loop import run
    from train.model import load_llm

    llm_dir = _tiny_backbone(name, tmp_path / name)
    s1 = write_training_shards(tmp_path / "s1", n=8, stage=1, per_shard=8, rows=2)
    s2 = write_training_shards(tmp_path / "s2", n=8, stage=2, per_shard=8, rows=2, seed=1)
    base = dict(llm=str(llm_dir), micro_batch=2, global_batch=4, max_steps=2, lr=1e-3, zero=2, lora_r=4,
                lora_alpha=8, gradient_checkpointing=False, num_workers=1, shuffle_buffer=4, progress=False,
                world_size=1)
    c1 = run(resolve_config(1, shards=str(s1), out=str(tmp_path / "c1"), **base))
    c2 = run(resolve_config(2, shards=str(s2), out=str(tmp_path / "c2"), from_checkpoint=str(c1),
                            conv_format="chat_template", **base))
    for ckpt in (c1, c2):
        rows = [json.loads(line) for line in (Path(ckpt) / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] > 0 for r in rows)
    meta = json.loads((Path(c2) / "vtl_checkpoint.json").read_text())
    assert meta["stage"] == 2 and meta["adapters"] == ["adapter"]
    # Generation stops at the tokenizer's EOS (eval.generate), which is the template's end-of-turn token, and every
    # supervised span of a stage-2 sample ends with it.
    _, tok = load_llm(str(llm_dir), attn="sdpa")
    eot = tok.convert_tokens_to_ids(END_OF_TURN[name])
    assert tok.eos_token_id == eot
    turns = [{"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "A man cooks."},
             {"from": "human", "value": "Then?"}, {"from": "gpt", "value": "He eats."}]
    enc = encode(turns, tok, "chat_template")
    assert [s[-1] for s in supervised_spans(enc.labels)] == [eot, eot] and IGNORE_INDEX in enc.labels
