"""`vtl-export`: a stage-2 checkpoint (LoRA trained away from zero) exported, loaded in a fresh process with
transformers + the folder's vtl_video_llm.py only, answers as vtl-chat's session does (greedy, same features)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.models import TEXTS, stage_cfg
from typer.testing import CliRunner

from train.checkpoint import save_checkpoint
from train.export_cli import app
from train.stages import prepare_stage1, prepare_stage2

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
QUESTIONS = ["When does the man open the door?", "What happens in the video?"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    save_checkpoint(prepare_stage1(stage_cfg(1, root / "s1"), texts=TEXTS), root / "s1", stage=1)
    m2 = prepare_stage2(stage_cfg(2, root / "s2", frm=root / "s1"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a LoRA that changes the answers, so "merged" is tested
        for name, p in m2.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    save_checkpoint(m2, root / "s2", stage=2, encoder="clip-test")
    return root / "s2"


def _chat_answers(checkpoint: Path, features: np.ndarray) -> list[str]:
    """What vtl-chat answers (its session code), one fresh dialogue per question."""
    from eval.chat import ChatSession
    from train.checkpoint import load_for_inference

    model = load_for_inference(checkpoint)
    return [ChatSession(model, features, 60.0, max_new_tokens=12).ask(q) for q in QUESTIONS]


def test_export_loads_in_a_fresh_process_and_answers_as_vtl_chat(checkpoint, tmp_path):
    out = tmp_path / "published"
    result = CliRunner().invoke(app, [str(checkpoint), "--out", str(out)])
    assert result.exit_code == 0, result.output
    spec = json.loads((out / "vtl_model.json").read_text())
    assert spec["conv_format"] == "v1" and spec["features"]["encoder"] == "clip-test"
    assert spec["features"]["dim"] == 768 and spec["trained"]["stage"] == 2
    assert not list(out.glob("adapter*")) and (out / "config.json").is_file()  # LoRA merged into the weights
    features = np.random.default_rng(0).standard_normal((100, 768)).astype(np.float32)
    np.save(tmp_path / "features.npy", features)
    want = _chat_answers(checkpoint, features)
    assert all(want) and want[0] != want[1]
    script = ("import json, sys, numpy as np; sys.path.insert(0, sys.argv[1]); from vtl_video_llm import VideoLLM; "
              "m = VideoLLM.from_pretrained(sys.argv[1]); f = np.load(sys.argv[2]); "
              "print(json.dumps([m.answer(f, q, max_new_tokens=12) for q in json.loads(sys.argv[3])]))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # vtl itself is not importable there
    done = subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "features.npy"),
                           json.dumps(QUESTIONS)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == want


def test_export_refuses_a_non_checkpoint_and_a_used_out(checkpoint, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, [str(tmp_path), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "not a finished vtl checkpoint" in bad.output
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    used = runner.invoke(app, [str(checkpoint), "--out", str(tmp_path / "used")])
    assert used.exit_code == 2 and "not empty" in used.output and (tmp_path / "used" / "keep.txt").read_text() == "mine"
