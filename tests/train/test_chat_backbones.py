"""Modern chat backbones through `chat_template`: tiny random Qwen3 and LLaMA-3.1 models with their real tokenizers
(shared/data/tokenizers) train stages 1 → 2 → 3 with their presets through vtl-train, evaluate (`vtl-eval
grounding`), chat (`vtl-chat --question`), and their answers stop at the template's end-of-turn token; Qwen3's
template is not prefix-stable (issue 28 item 3)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from backbone_chain import chat, evaluate, train_stages
from support.real_tokenizer import VICUNA_DIR

from pipeline.contract.conversation import IGNORE_INDEX, encode, supervised_spans

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning")]
END_OF_TURN = {"qwen3": "<|im_end|>", "llama3.1": "<|eot_id|>"}
PRESETS = {"qwen3": "qwen3", "llama3.1": "llama3"}


def _tiny_backbone(name: str, out: Path) -> Path:
    """A tiny random model of the tokenizer's architecture, saved with the real tokenizer files."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(VICUNA_DIR.parent / name)
    size = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=2048,
                eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    # untied: the end-of-turn rig below changes lm_head rows only, not the prompt's embeddings
    model = (Qwen3ForCausalLM(Qwen3Config(**size, tie_word_embeddings=False)) if name == "qwen3"
             else LlamaForCausalLM(LlamaConfig(**size, tie_word_embeddings=False)))
    model.save_pretrained(out)
    for f in (VICUNA_DIR.parent / name).iterdir():
        if f.name.startswith("tokenizer"):
            shutil.copy(f, out / f.name)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen3", "llama3.1"])
def test_three_stages_eval_and_chat_with_the_real_tokenizer(tmp_path, name):
    llm_dir = _tiny_backbone(name, tmp_path / name)
    ckpts = train_stages(tmp_path, str(llm_dir), [f"{PRESETS[name]}_stage{n}" for n in (1, 2, 3)])
    metas = [json.loads((Path(c) / "vtl_checkpoint.json").read_text()) for c in ckpts]
    assert [m["conv_format"] for m in metas] == ["plain", "chat_template", "chat_template"]
    assert metas[1]["adapters"] == ["adapter"] and metas[2]["adapters"] == ["base_adapters/00", "adapter"]
    for c in ckpts[1:]:  # every linear layer but lm_head, as for LLaMA
        targets = json.loads((c / "adapter" / "adapter_config.json").read_text())["target_modules"]
        assert "lm_head" not in targets and "q_proj" in targets
    preds = evaluate(tmp_path, ckpts[2])
    assert len(preds) >= 3 and all(END_OF_TURN[name] not in p["answer"] for p in preds)
    assert chat(tmp_path, ckpts[2]).startswith("model> ")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen3", "llama3.1"])
def test_generation_stops_at_the_templates_end_of_turn(tmp_path, name):
    """A model rigged so that its third greedy token is the end-of-turn token: both generation paths end the answer
    there, though the model, left to run, goes on past it."""
    import numpy as np
    import torch

    from eval.generate import Query, generate_batch, generate_shared, stop_ids
    from pipeline.contract.conversation import generation_prompt, video_turn
    from pipeline.contract.stops import template_end_of_turn
    from train.model import VideoLLM, load_llm, new_projector

    llm, tok = load_llm(str(_tiny_backbone(name, tmp_path / name)), attn="sdpa")
    eot = tok.convert_tokens_to_ids(END_OF_TURN[name])
    model = VideoLLM(llm, tok, new_projector(16, llm.config.hidden_size), conv_format="chat_template").eval()
    assert template_end_of_turn(tok) == eot and eot in stop_ids(model)
    prompt = generation_prompt([video_turn("what happens")], tok, "chat_template")
    query = Query(prompt, np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32))
    embeds = model.embed(prompt, torch.from_numpy(query.features))[None]

    def raw(n: int) -> list[int]:  # the tokens the model emits with no stop at all
        with torch.no_grad():
            return llm.generate(inputs_embeds=embeds, max_new_tokens=n, do_sample=False, eos_token_id=None,
                                pad_token_id=tok.pad_token_id)[0].tolist()

    first = raw(3)
    assert eot not in first
    with torch.no_grad():  # the last hidden state (after the final norm) at each of the three steps
        out = llm.generate(inputs_embeds=embeds, max_new_tokens=3, do_sample=False, eos_token_id=None,
                           pad_token_id=tok.pad_token_id, output_hidden_states=True, return_dict_in_generate=True)
        h = [step[-1][0, -1].float() for step in out.hidden_states]
        logits = [llm.lm_head.weight.float() @ v for v in h]
        # an end-of-turn row whose logit is below the top one at steps 1 and 2 and above it at step 3
        basis, _ = torch.linalg.qr(torch.stack(h[:2], 1))
        along = h[2] - basis @ (basis.T @ h[2])
        low = min(logits[0].max(), logits[1].max()) - 1
        fixed = basis @ torch.linalg.solve(torch.stack(h[:2]) @ basis, torch.full((2,), float(low)))
        row = fixed + along * (2 * logits[2].max().abs() + 1 - fixed @ h[2]) / (along @ h[2])
        llm.lm_head.weight[eot] = row.to(llm.lm_head.weight.dtype)
    rigged = raw(6)
    assert rigged[:3] == [*first[:2], eot] and len(rigged) == 6  # the rig moved only the third token
    want = tok.decode(first[:2], skip_special_tokens=True).strip()
    assert want and generate_batch(model, [query], 8) == [want]
    assert generate_shared(model, [query, query], 8) == [want, want]


def test_label_masks_end_every_answer_with_the_end_of_turn_token():
    from transformers import AutoTokenizer

    from train.model import prepare_tokenizer

    for name, eot_text in END_OF_TURN.items():
        tok = prepare_tokenizer(AutoTokenizer.from_pretrained(VICUNA_DIR.parent / name))
        eot = tok.convert_tokens_to_ids(eot_text)
        turns = [{"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "A man cooks."},
                 {"from": "human", "value": "Then?"}, {"from": "gpt", "value": "He eats."}]
        enc = encode(turns, tok, "chat_template")
        assert [s[-1] for s in supervised_spans(enc.labels)] == [eot, eot] and IGNORE_INDEX in enc.labels
