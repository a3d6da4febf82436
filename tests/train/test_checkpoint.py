"""Checkpoints: save -> load_for_inference gives the same logits; VTimeLLM-layout projector/LoRA files load."""
from __future__ import annotations

import json

import pytest
import torch
from support.models import TEXTS, V1_TURNS, batch, stage_cfg

from pipeline.contract.conversation import encode
from train.checkpoint import (
    CHECKPOINT_JSON,
    load_for_inference,
    load_projector_file,
    read_checkpoint,
    save_checkpoint,
)
from train.import_weights import import_vtimellm
from train.model import VideoLLM, load_llm
from train.stages import prepare_stage1, prepare_stage2, prepare_stage3
from train.tiny import build_tiny_random


def _logits(model, feats):
    enc = encode(V1_TURNS, model.tokenizer, "v1")
    with torch.no_grad():
        return model(*batch([enc], [feats])).logits


def _nudge_lora(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    m1 = prepare_stage1(stage_cfg(1, root / "s1"), texts=TEXTS).eval()
    save_checkpoint(m1, root / "s1", stage=1, config={"lr": 1e-3})
    m2 = prepare_stage2(stage_cfg(2, root / "s2", frm=root / "s1")).eval()
    _nudge_lora(m2, 1)
    save_checkpoint(m2, root / "s2", stage=2)
    m3 = prepare_stage3(stage_cfg(3, root / "s3", frm=root / "s2")).eval()
    _nudge_lora(m3, 2)
    save_checkpoint(m3, root / "s3", stage=3)
    return root, {1: m1, 2: m2, 3: m3}


def test_checkpoint_files_and_record(trained):
    root, _ = trained
    meta = read_checkpoint(root / "s3")
    assert meta["stage"] == 3 and meta["llm"] == {"source": "tiny-random", "saved": "llm"}
    assert meta["adapters"] == ["base_adapters/00", "adapter"] and meta["conv_format"] == "v1"
    assert meta["feature_dim"] == 768 and meta["producer"]["name"] == "vtl"
    for rel in meta["adapters"]:
        assert (root / "s3" / rel / "adapter_config.json").is_file()
        assert (root / "s3" / rel / "adapter_model.safetensors").is_file()
    assert (root / "s3" / "projector.safetensors").is_file() and (root / "s3" / "llm" / "config.json").is_file()
    assert read_checkpoint(root / "s1")["config"] == {"lr": 1e-3}


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_round_trip_gives_the_same_logits(trained, stage):
    root, models = trained
    feats = torch.randn(100, 768)
    loaded = load_for_inference(root / f"s{stage}")
    assert not loaded.training and loaded.conv_format == ("plain" if stage == 1 else "v1")
    assert not hasattr(loaded.llm, "peft_config")  # LoRA chain merged
    expected = _logits(models[stage], feats)
    if stage == 1:
        assert torch.equal(_logits(loaded, feats), expected)
    else:
        assert torch.allclose(_logits(loaded, feats), expected, atol=1e-5)


def _vtimellm_release(root, llm, hidden):
    """Files in VTimeLLM's layout: mm_projector.bin and a PEFT-0.4-era LoRA folder with adapter_model.bin."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    proj = {"model.mm_projector.weight": torch.randn(hidden, 768) * 0.02,
            "model.mm_projector.bias": torch.randn(hidden)}
    torch.save(proj, root / "mm_projector.bin")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_llm = get_peft_model(llm, LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM"))
    _nudge_lora(peft_llm, 3)
    state = get_peft_model_state_dict(peft_llm)
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in state  # VTimeLLM's key layout
    folder = root / "vtimellm-stage2"
    folder.mkdir()
    torch.save(state, folder / "adapter_model.bin")
    torch.save({}, folder / "non_lora_trainables.bin")
    config = {"auto_mapping": None, "base_model_name_or_path": "./checkpoints/vicuna-7b-v1.5", "bias": "none",
              "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "layers_pattern": None,
              "layers_to_transform": None, "lora_alpha": 8, "lora_dropout": 0.05, "modules_to_save": None,
              "peft_type": "LORA", "r": 4, "revision": None, "target_modules": targets, "task_type": "CAUSAL_LM"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    merged = peft_llm.merge_and_unload()
    return proj, folder, merged


def test_vtimellm_release_loads(tmp_path):
    llm_dir = tmp_path / "vicuna-like"
    llm, tok = build_tiny_random(TEXTS, out_dir=llm_dir, seed=5)
    hidden = llm.config.hidden_size
    proj, folder, merged = _vtimellm_release(tmp_path, llm, hidden)
    state = load_projector_file(tmp_path / "mm_projector.bin")
    assert torch.equal(state["weight"], proj["model.mm_projector.weight"])

    ckpt = import_vtimellm(tmp_path / "imported", llm=str(llm_dir), mm_projector=tmp_path / "mm_projector.bin",
                           adapters=[folder])
    meta = read_checkpoint(ckpt)
    assert meta["stage"] == 2 and meta["llm"] == {"source": str(llm_dir), "saved": None}
    loaded = load_for_inference(ckpt)
    reference = VideoLLM(merged, tok, torch.nn.Linear(768, hidden)).eval()
    reference.projector.load_state_dict(state)
    feats = torch.randn(100, 768)
    assert torch.allclose(_logits(loaded, feats), _logits(reference, feats), atol=1e-5)

    # the imported stage-2 checkpoint starts stage 3 (documented: --from IMPORTED --llm PATH)
    m3 = prepare_stage3(stage_cfg(3, tmp_path / "s3", frm=ckpt, llm=str(llm_dir)))
    assert torch.allclose(_logits(m3.eval(), feats), _logits(reference, feats), atol=1e-4)
    save_checkpoint(m3, tmp_path / "s3", stage=3)
    assert read_checkpoint(tmp_path / "s3")["llm"] == {"source": str(llm_dir), "saved": None}


def test_projector_only_release_is_a_stage1_checkpoint(tmp_path):
    llm_dir = tmp_path / "llm"
    llm, _ = build_tiny_random(TEXTS, out_dir=llm_dir, seed=0)
    torch.save({"model.mm_projector.weight": torch.zeros(llm.config.hidden_size, 768),
                "model.mm_projector.bias": torch.ones(llm.config.hidden_size)}, tmp_path / "mm_projector.bin")
    ckpt = import_vtimellm(tmp_path / "imp", llm=str(llm_dir), mm_projector=tmp_path / "mm_projector.bin")
    meta = read_checkpoint(ckpt)
    assert meta["stage"] == 1 and meta["adapters"] == [] and meta["conv_format"] == "plain"
    m2 = prepare_stage2(stage_cfg(2, tmp_path / "s2", frm=ckpt, llm=str(llm_dir)))
    assert torch.equal(m2.projector.bias, torch.ones(llm.config.hidden_size))


def test_bad_inputs_raise_clearly(tmp_path, trained):
    root, _ = trained
    torch.save({"model.layers.0.weight": torch.zeros(2, 2)}, tmp_path / "bad.bin")
    with pytest.raises(ValueError, match="mm_projector"):
        load_projector_file(tmp_path / "bad.bin")
    with pytest.raises(FileNotFoundError, match=CHECKPOINT_JSON):
        read_checkpoint(tmp_path)
    small_dir = tmp_path / "other"
    build_tiny_random(TEXTS, out_dir=small_dir, seed=0, hidden_size=32)
    meta = read_checkpoint(root / "s1")
    meta["llm"] = {"source": str(small_dir), "saved": None}
    moved = tmp_path / "ckpt"
    moved.mkdir()
    (moved / "projector.safetensors").write_bytes((root / "s1" / "projector.safetensors").read_bytes())
    (moved / CHECKPOINT_JSON).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="hidden size"):
        load_for_inference(moved)
    meta["llm"] = {"source": "tiny-random", "saved": None}
    (moved / CHECKPOINT_JSON).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="saved tiny-random"):
        load_for_inference(moved)
    assert load_llm(str(small_dir))[0].config.hidden_size == 32


def test_vtimellm_stage2_and_stage3_adapters_merge_in_order(tmp_path):
    """The released stage-3 model = LLM + stage-2 LoRA merged + stage-3 LoRA merged (reference §5.3 builder order)."""
    llm_dir = tmp_path / "llm"
    llm, tok = build_tiny_random(TEXTS, out_dir=llm_dir, seed=7)
    hidden = llm.config.hidden_size
    (tmp_path / "r2").mkdir()
    _, stage2, merged2 = _vtimellm_release(tmp_path / "r2", llm, hidden)
    (tmp_path / "r3").mkdir()
    _, stage3, merged3 = _vtimellm_release(tmp_path / "r3", merged2, hidden)
    ckpt = import_vtimellm(tmp_path / "imp", llm=str(llm_dir), mm_projector=tmp_path / "r2" / "mm_projector.bin",
                           adapters=[stage2, stage3])
    meta = read_checkpoint(ckpt)
    assert meta["stage"] == 3 and meta["adapters"] == ["base_adapters/00", "base_adapters/01"]
    reference = VideoLLM(merged3, tok, torch.nn.Linear(768, hidden)).eval()
    reference.projector.load_state_dict(load_projector_file(tmp_path / "r2" / "mm_projector.bin"))
    feats = torch.randn(100, 768)
    assert torch.allclose(_logits(load_for_inference(ckpt), feats), _logits(reference, feats), atol=1e-5)


def test_import_weights_command_gives_the_same_checkpoint(tmp_path):
    from typer.testing import CliRunner

    from train.import_cli import app

    llm_dir = tmp_path / "vicuna-like"
    llm, _ = build_tiny_random(TEXTS, out_dir=llm_dir, seed=5)
    _, folder, _ = _vtimellm_release(tmp_path, llm, llm.config.hidden_size)
    result = CliRunner().invoke(app, ["--llm", str(llm_dir), "--mm-projector", str(tmp_path / "mm_projector.bin"),
                                      "--adapter", str(folder), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "stage-2 checkpoint" in result.output
    direct = import_vtimellm(tmp_path / "direct", llm=str(llm_dir), mm_projector=tmp_path / "mm_projector.bin",
                             adapters=[folder])
    feats = torch.randn(100, 768)
    assert torch.equal(_logits(load_for_inference(tmp_path / "cli"), feats), _logits(load_for_inference(direct), feats))
    missing = CliRunner().invoke(app, ["--llm", str(llm_dir), "--mm-projector", str(tmp_path / "nope.bin"),
                                       "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "not found" in missing.output
