"""`vtl-train --projector mlp2x_gelu` (2 steps, tiny-random): saved, recorded and rebuilt on load; the checkpoint
records the shards' feature spec and `--from` refuses shards of another spec in one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.training import write_training_shards

from pipeline.contract.feature_spec import KEY, FeatureSpec
from pipeline.contract.shards import read_index

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(var, None)


def vtl_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train.cli", *args], env=ENV, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def with_spec(shard_dir: Path, spec: FeatureSpec) -> Path:
    """Add a `feature_spec` to a shard folder's index.json (as extract + build-qa will write it)."""
    index = read_index(shard_dir)
    (shard_dir / "index.json").write_text(json.dumps({**index, KEY: spec.to_json()}))
    return shard_dir


def test_mlp_projector_saves_reloads_and_from_refuses_another_spec(tmp_path):
    from train.checkpoint import load_for_inference, read_checkpoint
    from train.model import MlpProjector

    spec = FeatureSpec(encoder_family=None, encoder_model="random", weights_digest=None, preprocessing=None,
                       frames=1)
    s1 = with_spec(write_training_shards(tmp_path / "s1", n=16, stage=1, per_shard=8, rows=1), spec)
    out = tmp_path / "c1"
    done = vtl_train("--stage", "1", "--shards", str(s1), "--llm", "tiny-random", "--out", str(out),
                     "--max-steps", "2", "--global-batch", "8", "--micro-batch", "8", "--projector", "mlp2x_gelu",
                     "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    meta = read_checkpoint(out)
    assert meta["projector_type"] == "mlp2x_gelu" and meta[KEY] == spec.to_json()
    assert json.loads((out / "run_config.json").read_text())["config"]["projector"] == "mlp2x_gelu"
    model = load_for_inference(out)
    assert isinstance(model.projector, MlpProjector) and model.feature_dim == 768
    from safetensors.torch import load_file

    saved = load_file(str(out / "projector.safetensors"))
    assert sorted(saved) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert torch.equal(model.projector[2].weight, saved["2.weight"].float())

    other = FeatureSpec(encoder_family=None, encoder_model="random", weights_digest=None, preprocessing=None,
                        width=768, sampling="fps", fps=1.0, frames=64, tokens_per_frame=4)
    s2 = with_spec(write_training_shards(tmp_path / "s2", n=16, stage=2, per_shard=8, rows=4, seed=1), other)
    refused = vtl_train("--stage", "2", "--shards", str(s2), "--from", str(out), "--out", str(tmp_path / "c2"),
                        "--llm", "tiny-random", "--max-steps", "1", "--global-batch", "8", "--micro-batch", "8")
    assert refused.returncode == 2, refused.stderr[-2000:]
    line = [x for x in refused.stderr.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and spec.describe() in line[0] and other.describe() in line[0], refused.stderr[-2000:]
    assert line[0].endswith("(differ in sampling, frames, tokens_per_frame)")
    assert not (tmp_path / "c2" / "vtl_checkpoint.json").exists()
