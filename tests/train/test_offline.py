"""With no model hub, every command that loads an LLM says so in one line within seconds (issue 25 item 3), and
`--llm tiny-random` reads its shards through the trainer's checked reader (issue 26 item 4).

Real console-script processes; the only "hub" is HF_ENDPOINT pointing at a closed port on 127.0.0.1 (or
HF_HUB_OFFLINE=1), with an empty hub cache. Nothing is mocked.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.cli import set_tar_size_field
from support.evaluation import eval_shards, tiny_checkpoint
from support.training import write_training_shards

from infra.hub import TINY_RANDOM
from tests.infra.test_hub import closed_port_endpoint

ROOT = Path(__file__).resolve().parents[2]
HUB_NAME = "someorg/some-model"


def offline_env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "RANK",
                                                            "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "DS_ACCELERATOR": "cpu", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
            "HF_HOME": str(tmp_path / "hf-home"), "HF_ENDPOINT": closed_port_endpoint(), **extra}


def run_cli(module: str, args: list, env: dict, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    return proc, time.perf_counter() - t0


def one_line(proc: subprocess.CompletedProcess, *says: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert all(s in lines[0] for s in says), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_training_shards(tmp_path_factory.mktemp("offline") / "shards", n=16, stage=1, per_shard=8, rows=1)


def train_args(shards: Path, out: Path, llm: str) -> list:
    return ["--stage", "1", "--shards", shards, "--llm", llm, "--out", out, "--engine", "torch", "--zero", "0",
            "--max-steps", "1", "--micro-batch", "4", "--global-batch", "4", "--num-workers", "1", "--no-progress",
            "--no-gradient-checkpointing"]


@pytest.mark.parametrize("offline", [False, True], ids=["unreachable", "HF_HUB_OFFLINE"])
def test_vtl_train_with_a_hub_name_and_no_hub_is_one_line_in_seconds(shards, tmp_path, offline):
    env = offline_env(tmp_path, **({"HF_HUB_OFFLINE": "1"} if offline else {}))
    proc, seconds = run_cli("train.cli", train_args(shards, tmp_path / "out", HUB_NAME), env)
    line = one_line(proc, f"--llm {HUB_NAME}", "local folder", "HF_HUB_OFFLINE" if offline else env["HF_ENDPOINT"])
    assert seconds < 10, (seconds, line)
    assert "Retrying" not in proc.stdout + proc.stderr and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def own_checkpoint(tmp_path_factory):
    """A stage-1 tiny-random checkpoint: it carries its LLM in llm/."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ownckpt") / "ck")


@pytest.fixture(scope="module")
def hub_checkpoint(own_checkpoint, tmp_path_factory):
    """The same checkpoint naming its LLM instead of carrying it (as one trained on a hub model does)."""
    ckpt = tmp_path_factory.mktemp("hubckpt") / "ck"
    shutil.copytree(own_checkpoint, ckpt)
    meta = json.loads((ckpt / "vtl_checkpoint.json").read_text())
    meta["llm"] = {"source": HUB_NAME, "saved": None}
    (ckpt / "vtl_checkpoint.json").write_text(json.dumps(meta))
    shutil.rmtree(ckpt / "llm")
    return ckpt


def test_vtl_eval_with_a_hub_llm_and_no_hub_is_one_line_in_seconds(hub_checkpoint, tmp_path):
    shards = eval_shards(tmp_path / "eval", "grounding")
    proc, seconds = run_cli("eval.cli", ["grounding", "--checkpoint", hub_checkpoint, "--shards", shards, "--out",
                                         tmp_path / "out", "--llm", HUB_NAME], offline_env(tmp_path))
    one_line(proc, f"--llm {HUB_NAME}", "cannot be reached", "local folder")
    assert seconds < 10 and "Retrying" not in proc.stdout + proc.stderr


def test_vtl_chat_with_a_hub_llm_and_no_hub_is_one_line_in_seconds(hub_checkpoint, tmp_path):
    from pipeline.synth.media import write_video

    frames = np.zeros((20, 48, 64, 3), dtype=np.uint8)
    frames[:, 16:32, 8:24] = 255
    video = write_video(tmp_path / "clip.mp4", frames, fps=10.0)
    proc, seconds = run_cli("eval.chat_cli", [video, "--checkpoint", hub_checkpoint, "--clip-model", TINY_RANDOM,
                                              "--llm", HUB_NAME, "--question", "What happens?"], offline_env(tmp_path))
    one_line(proc, f"--llm {HUB_NAME}", "cannot be reached", "local folder")
    assert seconds < 10 and "Retrying" not in proc.stdout + proc.stderr


def test_vtl_chat_with_hub_clip_weights_and_no_hub_is_one_line_in_seconds(own_checkpoint, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"never decoded: the encoder is loaded first")
    proc, seconds = run_cli("eval.chat_cli", [video, "--checkpoint", own_checkpoint, "--clip-pretrained", "openai",
                                              "--question", "What happens?"], offline_env(tmp_path))
    one_line(proc, "--clip-pretrained openai", "cannot be reached", "--clip-weights")
    # open_clip's table of hub copies comes with torch (~3 s idle, up to ~10 s on a loaded 2-core machine): the bound
    # is the retry wall's (~60 s) being gone, not the import time
    assert seconds < 30 and "Retrying" not in proc.stdout + proc.stderr


def test_tiny_random_on_a_damaged_shard_is_the_checked_readers_one_line(shards, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(shards, damaged)
    second = sorted(damaged.glob("*.tar"))[1]
    set_tar_size_field(second, 4, b"-0001000")
    proc, _ = run_cli("train.cli", train_args(damaged, tmp_path / "out", TINY_RANDOM), offline_env(tmp_path))
    one_line(proc, "tiny-random", str(second), "declares -512 bytes", "damaged shard")
    assert "Traceback" not in proc.stderr and not (tmp_path / "out" / "llm").exists()
