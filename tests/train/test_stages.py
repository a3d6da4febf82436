"""Stage table, presets and the three prepare functions: only the intended parameters train; stage 3 starts merged."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from support.models import PLAIN_TURNS, TEXTS, V1_TURNS, batch, stage_cfg

from pipeline.contract.conversation import encode
from pipeline.contract.shards import Sample, ShardWriter, write_index
from train.checkpoint import save_checkpoint
from train.config import PRESET_DIR, load_preset, resolve_config
from train.model import load_llm
from train.stages import STAGES, lora_targets, prepare_model, prepare_stage1, prepare_stage2, prepare_stage3
from train.tiny import tiny_texts


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _train_step(model, turns, fmt, rows, lr=1e-2):
    """One AdamW step on one sample over the parameters that require grad."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    loss = model(*batch([encode(turns, model.tokenizer, fmt)], [torch.randn(rows, 768)])).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    model.eval()


def _changed(before, model):
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Stage 1 -> 2 -> 3 on a tiny-random LLM, each stage trained one step and saved."""
    root = tmp_path_factory.mktemp("stages")
    out = {}
    m1 = prepare_stage1(stage_cfg(1, root / "s1"), texts=TEXTS)
    before = _snapshot(m1)
    _train_step(m1, PLAIN_TURNS, "plain", 1)
    out["s1_changed"] = _changed(before, m1)
    save_checkpoint(m1, root / "s1", stage=1)
    m2 = prepare_stage2(stage_cfg(2, root / "s2", frm=root / "s1"))
    out["s2_trainable"] = [n for n, p in m2.named_parameters() if p.requires_grad]
    before = _snapshot(m2)
    _train_step(m2, V1_TURNS, "v1", 100)
    _train_step(m2, V1_TURNS, "v1", 100)  # lora_B starts at 0: two steps make B·A non-zero
    out["s2_changed"] = _changed(before, m2)
    save_checkpoint(m2, root / "s2", stage=2)
    m3 = prepare_stage3(stage_cfg(3, root / "s3", frm=root / "s2"))
    out.update(root=root, m1=m1, m2=m2, m3=m3)
    return out


# VTimeLLM's recipe, reference/vtimellm.md §5.1 (scripts/stage{1,2,3}.sh): lr, epochs, ZeRO stage, per-device batch,
# template. Written here, not read from the code, so a preset that drifts from the paper fails.
PAPER = {1: (1e-3, 1, 3, 16, "plain"), 2: (1e-4, 2, 3, 8, "v1"), 3: (1e-4, 2, 2, 8, "v1")}


def test_presets_load_and_match_the_paper():
    files = sorted(PRESET_DIR.glob("*.yaml"))
    families = ["", "glm_", "llama3_", "mistral_", "phi3_", "qwen3_"]
    assert [f.stem for f in files] == sorted(f"{fam}stage{n}" for fam in families for n in (1, 2, 3))
    for f in files:
        load_preset(f)
    assert sorted(STAGES) == sorted(PAPER)
    for number, expected in PAPER.items():
        cfg = resolve_config(number, shards="s", llm="tiny-random", out="o",
                             from_checkpoint="f" if number > 1 else None)
        assert (cfg.lr, cfg.epochs, cfg.zero, cfg.micro_batch, cfg.conv_format) == expected
        assert cfg.conv_format == STAGES[number].conv_format  # the table's fallback agrees with the preset
        assert (cfg.global_batch, cfg.warmup_ratio, cfg.weight_decay, cfg.max_tokens) == (128, 0.03, 0.0, 2048)
        assert cfg.gradient_checkpointing
        assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (64, 128, 0.05)


# VTimeLLM's GLM scripts (scripts/stage{1,2,3}_glm.sh): lr, epochs, ZeRO (zero3.json, zero3.json, zero2.json),
# per-device batch (× accumulation = 128), LoRA r/α; the format is vtl's chatglm3 from stage 2 on.
GLM_SCRIPTS = {1: (1e-3, 1, 3, 16, "plain"), 2: (1e-4, 2, 3, 8, "chatglm3"), 3: (1e-4, 2, 2, 8, "chatglm3")}


def test_glm_presets_match_vtimellm_glm_scripts():
    for number, expected in GLM_SCRIPTS.items():
        cfg = resolve_config(number, shards="s", llm="tiny-random", out="o", preset=f"glm_stage{number}",
                             from_checkpoint="f" if number > 1 else None)
        assert (cfg.lr, cfg.epochs, cfg.zero, cfg.micro_batch, cfg.conv_format) == expected
        assert (cfg.global_batch, cfg.lora_r, cfg.lora_alpha, cfg.warmup_ratio) == (128, 64, 128, 0.03)
        assert cfg.preset.endswith(f"glm_stage{number}.yaml") and cfg.gradient_checkpointing


# The chat backbones' presets (LLaMA-3.1, Qwen3, Mistral, Phi-3): VTimeLLM's numbers (PAPER) with the model's own
# chat template from stage 2 on.
@pytest.mark.parametrize("family", ["llama3", "qwen3", "mistral", "phi3"])
def test_chat_backbone_presets_carry_the_recipe_with_the_chat_template(family):
    for number, (lr, epochs, zero, micro, fmt) in PAPER.items():
        cfg = resolve_config(number, shards="s", llm="tiny-random", out="o", preset=f"{family}_stage{number}",
                             from_checkpoint="f" if number > 1 else None)
        assert (cfg.lr, cfg.epochs, cfg.zero, cfg.micro_batch) == (lr, epochs, zero, micro)
        assert cfg.conv_format == ("plain" if number == 1 else "chat_template")
        assert (cfg.global_batch, cfg.warmup_ratio, cfg.weight_decay, cfg.max_tokens) == (128, 0.03, 0.0, 2048)
        assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (64, 128, 0.05) and cfg.gradient_checkpointing
        assert cfg.preset.endswith(f"{family}_stage{number}.yaml")


def test_gradient_clipping_is_off_by_default_and_still_available():
    """Issue 13 item 4: VTimeLLM's DeepSpeed JSONs set no `gradient_clipping` (DeepSpeed's default 0 = off)."""
    from train.engine import deepspeed_config

    for number in STAGES:
        cfg = resolve_config(number, shards="s", llm="tiny-random", out="o",
                             from_checkpoint="f" if number > 1 else None)
        assert cfg.grad_clip == 0.0 and deepspeed_config(cfg, "fp32")["gradient_clipping"] == 0.0
    clipped = resolve_config(2, shards="s", llm="tiny-random", out="o", from_checkpoint="f", grad_clip=1.0)
    assert deepspeed_config(clipped, "fp32")["gradient_clipping"] == 1.0


def test_stage_table_chains_the_stages():
    assert [(s.trainable, s.from_stage) for s in STAGES.values()] == [("projector", None), ("lora", 1), ("lora", 2)]


def test_stage1_trains_the_projector_only(chain):
    assert chain["s1_changed"] == {"projector.weight", "projector.bias"}
    assert [n for n, p in chain["m1"].named_parameters() if p.requires_grad] == ["projector.weight", "projector.bias"]
    # the tiny-random LLM was saved in out/llm and reloads to the same weights
    llm, _ = load_llm(str(chain["root"] / "s1" / "llm"))
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.equal(llm(ids).logits, chain["m1"].llm(ids).logits)


def test_stage2_trains_lora_only_with_frozen_projector(chain):
    m1, m2 = chain["m1"], chain["m2"]
    assert chain["s2_trainable"] and all("lora_" in n for n in chain["s2_trainable"])
    assert chain["s2_changed"] == {n for n in chain["s2_trainable"]}
    assert torch.equal(m2.projector.weight, m1.projector.weight)  # stage-1 projector loaded, then frozen
    assert not m2.projector.weight.requires_grad
    targeted = {n.split(".")[-4] for n in chain["s2_trainable"]}
    assert targeted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_lora_targets_skip_lm_head(chain):
    assert "lm_head" not in lora_targets(chain["m1"].llm)
    assert len(lora_targets(chain["m1"].llm)) == 7


def test_stage3_starts_from_merged_stage2_weights(chain):
    m2, m3 = chain["m2"], chain["m3"]
    layer = "base_model.model.model.layers.0.self_attn.q_proj"
    m2p = dict(m2.llm.named_parameters())
    scale = 16 / 8  # lora_alpha / r in stage_cfg
    delta = m2p[f"{layer}.lora_B.default.weight"] @ m2p[f"{layer}.lora_A.default.weight"] * scale
    assert delta.abs().max() > 0
    merged = m2p[f"{layer}.base_layer.weight"] + delta
    m3p = dict(m3.llm.named_parameters())
    assert torch.allclose(m3p[f"{layer}.base_layer.weight"], merged, atol=1e-6)
    assert all("lora_" in n for n, p in m3.named_parameters() if p.requires_grad)
    assert torch.equal(m3.projector.weight, m2.projector.weight)
    # a fresh LoRA (B = 0) on the merged weights computes what the stage-2 model computed
    enc = encode(V1_TURNS, m2.tokenizer, "v1")
    feats = torch.randn(100, 768)
    with torch.no_grad():
        assert torch.allclose(m2(*batch([enc], [feats])).logits, m3(*batch([enc], [feats])).logits, atol=1e-4)


def test_stage3_step_leaves_frozen_weights_bit_equal(chain):
    m3 = chain["m3"]
    before = _snapshot(m3)
    _train_step(m3, V1_TURNS, "v1", 100)
    _train_step(m3, V1_TURNS, "v1", 100)
    changed = _changed(before, m3)
    assert changed and all("lora_" in n for n in changed)


def test_from_checkpoint_must_be_the_previous_stage(chain):
    with pytest.raises(ValueError, match="stage-2 checkpoint"):
        prepare_stage3(stage_cfg(3, chain["root"] / "x", frm=chain["root"] / "s1"))
    with pytest.raises(ValueError, match="needs --from"):
        prepare_stage2(stage_cfg(2, chain["root"] / "x"))
    with pytest.raises(FileNotFoundError, match="not a finished vtl checkpoint"):
        prepare_model(stage_cfg(2, chain["root"] / "x", frm=chain["root"] / "nothing"))


def test_tiny_texts_come_from_the_shards(tmp_path):
    with ShardWriter(tmp_path, "train") as writer:
        for i, turns in enumerate([PLAIN_TURNS, V1_TURNS]):
            meta = {"key": f"k{i}", "caption": f"caption number {i}", "events": [{"start": 0, "end": 1,
                                                                                 "caption": "event text"}]}
            writer.write(Sample(f"k{i}", np.zeros((1, 4), np.float16), meta, {"turns": turns}))
    write_index(tmp_path, writer.shards, encoder=None, num_frames=None, dim=4, manifest_hash=None)
    texts = tiny_texts(tmp_path)
    assert "caption number 1" in texts and "event text" in texts and V1_TURNS[3]["value"] in texts


def test_prepare_reads_a_real_train_config(chain, tmp_path):
    """The prepare functions take TrainConfig itself (attribute names agree), here with the preset's LoRA r=64."""
    cfg = resolve_config(2, shards=str(tmp_path), llm="tiny-random", out=str(tmp_path / "s2"),
                         from_checkpoint=str(chain["root"] / "s1"))
    model = prepare_model(cfg)
    assert model.conv_format == "v1" and model.llm.peft_config["default"].r == 64
    assert model.llm.peft_config["default"].lora_alpha == 128
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
