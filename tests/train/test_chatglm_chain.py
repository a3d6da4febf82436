"""ChatGLM3 as released, end to end through the CLIs (issue 28, first "done when"): a tiny random checkpoint in the
released layout, whose modeling_chatglm.py raises if run, trains stages 1 → 2 → 3 with VTimeLLM's GLM presets (steps
and batch overridden small), evaluates with `vtl-eval grounding` and answers with `vtl-chat --question`."""
from __future__ import annotations

import json
import sys

import pytest
from backbone_chain import chat, evaluate, train_stages
from safetensors.torch import save_file

from tests.train.test_chatglm import CONFIG, _chatglm_weights, _train_spm
from train.chatglm import CHATGLM_SPECIAL_TOKENS

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]


def test_released_chatglm3_trains_three_stages_evaluates_and_chats(tmp_path):
    folder = tmp_path / "chatglm3-6b"
    folder.mkdir()
    cfg = dict(CONFIG, padded_vocab_size=_train_spm(folder) + len(CHATGLM_SPECIAL_TOKENS) + 7, seq_length=2048)
    (folder / "config.json").write_text(json.dumps(cfg))
    save_file(_chatglm_weights(cfg, seed=5), folder / "model.safetensors")
    (folder / "modeling_chatglm.py").write_text("raise RuntimeError('downloaded code ran')\n")
    (folder / "tokenization_chatglm.py").write_text("raise RuntimeError('downloaded code ran')\n")

    ckpts = train_stages(tmp_path, str(folder), ["glm_stage1", "glm_stage2", "glm_stage3"])
    metas = [json.loads((c / "vtl_checkpoint.json").read_text()) for c in ckpts]
    assert [m["conv_format"] for m in metas] == ["plain", "chatglm3", "chatglm3"]
    assert metas[2]["adapters"] == ["base_adapters/00", "adapter"]
    assert all(m["llm"]["source"] == str(folder) for m in metas)  # the released folder, converted on each load
    # VTimeLLM's GLM LoRA covers the output layer (lm_head once converted)
    for c in ckpts[1:]:
        assert "lm_head" in json.loads((c / "adapter" / "adapter_config.json").read_text())["target_modules"]
    preds = evaluate(tmp_path, ckpts[2])
    assert len(preds) >= 3 and all(isinstance(p["answer"], str) for p in preds)
    assert chat(tmp_path, ckpts[2]).startswith("model> ")
    # transformers puts code it runs from a model folder under `transformers_modules`: nothing went there
    assert not any(name.startswith("transformers_modules") for name in sys.modules)
