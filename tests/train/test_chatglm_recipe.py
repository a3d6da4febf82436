"""VTimeLLM's GLM recipe on the converted model (issue 28 items 1-2): the conversion command, LoRA on GLM's lm_head,
VTimeLLM's ChatGLM3 releases (projector + ChatGLM-named LoRA) imported onto the conversion, and answers that stop at
`<|user|>`."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from tests.train.test_chatglm import CONFIG, _chatglm_weights, _train_spm
from train.chatglm import CHATGLM_SPECIAL_TOKENS, glm_config, glm_state_dict, load_chatglm3
from train.import_cli import app as import_app

CHATGLM_TARGETS = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h", "output_layer"]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("chatglm3")
    cfg = dict(CONFIG, padded_vocab_size=_train_spm(folder) + len(CHATGLM_SPECIAL_TOKENS) + 7)
    (folder / "config.json").write_text(json.dumps(cfg))
    weights = _chatglm_weights(cfg, seed=3)
    save_file(weights, folder / "model.safetensors")
    (folder / "modeling_chatglm.py").write_text("raise RuntimeError('downloaded code ran')\n")
    return folder, cfg, weights


def test_convert_command_and_its_refusals(released, tmp_path):
    folder, _, _ = released
    runner = CliRunner()
    ok = runner.invoke(import_app, ["--convert-chatglm3", str(folder), "--out", str(tmp_path / "glm")])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "glm" / "config.json").read_text())["model_type"] == "glm"
    assert (tmp_path / "glm" / "tokenizer.json").is_file()
    mixed = runner.invoke(import_app, ["--convert-chatglm3", str(folder), "--llm", "x", "--out", str(tmp_path / "m")])
    assert mixed.exit_code == 2 and "drop llm" in mixed.output and not (tmp_path / "m").exists()
    bare = runner.invoke(import_app, ["--out", str(tmp_path / "b")])
    assert bare.exit_code == 2 and "--llm is required" in bare.output
    not_glm = runner.invoke(import_app, ["--convert-chatglm3", str(tmp_path / "glm"), "--out", str(tmp_path / "g2")])
    assert not_glm.exit_code == 2 and "model_type 'chatglm'" in not_glm.output


def test_glm_lora_targets_keep_lm_head(released):
    from train.stages import lora_targets
    from train.tiny import build_tiny_random

    llm, _ = load_chatglm3(str(released[0]))
    assert lora_targets(llm) == ["down_proj", "gate_up_proj", "k_proj", "lm_head", "o_proj", "q_proj", "v_proj"]
    llama, _ = build_tiny_random(["a b c d e f"] * 4, seed=0)
    assert "lm_head" not in lora_targets(llama)  # VTimeLLM's default stays as it was


def _chatglm_lora(cfg: dict, r: int, seed: int) -> dict:
    """A LoRA on ChatGLM3's module names, keyed as VTimeLLM's PEFT saves it."""
    g = torch.Generator().manual_seed(seed)
    h, hd, heads, groups, ffn = (cfg["hidden_size"], cfg["kv_channels"], cfg["num_attention_heads"],
                                 cfg["multi_query_group_num"], cfg["ffn_hidden_size"])
    shapes = {"self_attention.query_key_value": (heads * hd + 2 * groups * hd, h),
              "self_attention.dense": (h, heads * hd), "mlp.dense_h_to_4h": (2 * ffn, h),
              "mlp.dense_4h_to_h": (h, ffn)}
    modules = {f"transformer.encoder.layers.{i}.{name}": shape for i in range(cfg["num_layers"])
               for name, shape in shapes.items()}
    modules["transformer.output_layer"] = (cfg["padded_vocab_size"], h)
    state = {}
    for module, (rows, cols) in modules.items():
        state[f"base_model.model.{module}.lora_A.weight"] = torch.randn(r, cols, generator=g) * 0.1
        state[f"base_model.model.{module}.lora_B.weight"] = torch.randn(rows, r, generator=g) * 0.1
    return state


def _merged_reference(weights: dict, loras: list[dict], scale: float):
    """GlmForCausalLM from ChatGLM3 weights with the LoRAs merged on ChatGLM's names, then converted."""
    from transformers import GlmForCausalLM

    merged = dict(weights)
    for lora in loras:
        for key, a in lora.items():
            if ".lora_A." in key:
                module = key.removeprefix("base_model.model.").split(".lora_A.")[0]
                b = lora[key.replace(".lora_A.", ".lora_B.")]
                merged[module + ".weight"] = merged[module + ".weight"] + b @ a * scale
    config = glm_config(json.loads(json.dumps(CONFIG | {"padded_vocab_size": weights[
        "transformer.output_layer.weight"].shape[0]})))
    config._attn_implementation = "eager"
    model = GlmForCausalLM(config)
    model.load_state_dict(glm_state_dict(merged, config), strict=False)
    return model.eval()


def test_vtimellm_chatglm3_release_imports_onto_the_conversion(released, tmp_path):
    from train.checkpoint import load_for_inference, read_checkpoint

    folder, cfg, weights = released
    r, alpha = 4, 8
    torch.save({"model.mm_projector.weight": torch.randn(cfg["hidden_size"], 16),
                "model.mm_projector.bias": torch.randn(cfg["hidden_size"])}, tmp_path / "mm_projector.bin")
    loras = []
    for stage in (2, 3):
        lora_dir = tmp_path / f"vtimellm-chatglm3-6b-stage{stage}"
        lora_dir.mkdir()
        loras.append(_chatglm_lora(cfg, r, seed=stage))
        torch.save(loras[-1], lora_dir / "adapter_model.bin")
        (lora_dir / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.05,
            "bias": "none", "target_modules": CHATGLM_TARGETS, "base_model_name_or_path": "chatglm3-6b"}))
    args = ["--llm", str(folder), "--mm-projector", str(tmp_path / "mm_projector.bin"), "--out", str(tmp_path / "c")]
    for stage in (2, 3):
        args += ["--adapter", str(tmp_path / f"vtimellm-chatglm3-6b-stage{stage}")]
    result = CliRunner().invoke(import_app, args)
    assert result.exit_code == 0, result.output
    meta = read_checkpoint(tmp_path / "c")
    assert meta["stage"] == 3 and meta["conv_format"] == "chatglm3"
    saved = json.loads((tmp_path / "c" / "base_adapters" / "00" / "adapter_config.json").read_text())
    assert saved["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"]
    model = load_for_inference(tmp_path / "c")
    ids = torch.randint(0, cfg["padded_vocab_size"], (1, 19), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = model.llm(input_ids=ids).logits
        want = _merged_reference(weights, loras, alpha / r)(input_ids=ids).logits
        plain = _merged_reference(weights, [], 1.0)(input_ids=ids).logits
    assert (want - plain).abs().max() > 1e-2  # the LoRAs change the output, so the comparison tests the renaming
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_chatglm3_answers_stop_at_user(released):
    """A model whose third greedy token is `<|user|>`: chatglm3 answers end there, in both generation paths."""
    import numpy as np

    from eval.generate import Query, generate_batch, generate_shared
    from pipeline.contract.conversation import generation_prompt, video_turn
    from train.model import VideoLLM, new_projector

    llm, tok = load_chatglm3(str(released[0]), attn="sdpa")
    model = VideoLLM(llm, tok, new_projector(16, llm.config.hidden_size), conv_format="v1").eval()
    prompt = generation_prompt([video_turn("what happens")], tok, "chatglm3")
    query = Query(prompt, np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32))
    raw = llm.generate  # the tokens the model emits with EOS as its only stop
    embeds = model.embed(prompt, torch.from_numpy(query.features))[None]
    with torch.no_grad():
        first = raw(inputs_embeds=embeds, max_new_tokens=3, do_sample=False, eos_token_id=None,
                    pad_token_id=0)[0].tolist()
    user = tok.convert_tokens_to_ids("<|user|>")
    assert user not in first[:2]
    with torch.no_grad():  # <|user|>'s logit becomes twice the third token's (its logit is the largest, > 0)
        llm.lm_head.weight[user] = 2 * llm.lm_head.weight[first[2]]
    model.conv_format = "chatglm3"
    want = tok.decode(first[:2], skip_special_tokens=True).strip()
    assert generate_batch(model, [query], 8) == [want]
    assert generate_shared(model, [query, query], 8) == [want, want]
    model.conv_format = "v1"  # EOS only: the answer runs past <|user|>
    assert generate_batch(model, [query], 8)[0].startswith(want) and "<|user|>" in generate_batch(model, [query], 8)[0]
