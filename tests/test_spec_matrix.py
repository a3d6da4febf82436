"""Extract → build-qa → vtl-train (stage 1, two steps) through the real commands, for encoders, frame rules and
tokens per frame beyond VTimeLLM's, chosen so every value of each axis is run once: {open_clip ViT-L/14-shaped,
open_clip SigLIP-shaped, Hugging Face CLIPVision} × {uniform 100, uniform 64, fps 1 max 64} × {1, 4 tokens}. The fps
case mixes frame counts in one shard set (videos of 4 s and 6.5 s)."""
from __future__ import annotations

import json

import pytest
from _encoder_helpers import hf_tower
from _extract_helpers import write_rows
from typer.testing import CliRunner

from manifests.schema import Event, ManifestRow
from pipeline.contract.shards import iter_samples, read_index
from pipeline.synth.media import frame_counter_video

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]
CASES = {  # encoder, sampling options, tokens per frame, expected rows per video (by key)
    "vitl-uniform100-k1": ("tiny-random", [], 1, {"a": 100, "b": 100}),
    "siglip-fps1-k4": ("tiny-random-siglip", ["--fps", "1", "--max-frames", "64"], 4, {"a": 4, "b": 6}),
    "hfclip-uniform64-k1": ("hf-clip", ["--frames", "64"], 1, {"a": 64, "b": 64}),
    "vitl-uniform64-k4": ("tiny-random", ["--frames", "64"], 4, {"a": 64, "b": 64}),
}


def invoke(app, *args: str) -> str:
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert res.exit_code == 0, (args[0], res.output, res.exception)
    return res.output


@pytest.fixture
def dist_env(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")


@pytest.mark.parametrize("case", list(CASES))
def test_extract_build_qa_train(case, tmp_path, dist_env):
    from pipeline.cli import app as pipeline_app
    from train.cli import app as train_app

    encoder, sampling, k, rows = CASES[case]
    if encoder == "hf-clip":
        encoder = str(hf_tower(tmp_path / "hf-clip", "clip"))
    videos = {"a": frame_counter_video(tmp_path / "a.mp4", 40, 10.0), "b": frame_counter_video(tmp_path / "b.mp4", 65,
                                                                                               10.0)}
    manifest = write_rows([ManifestRow(key=key, dataset="synth", kind="video", media=str(path), caption=f"clip {key}",
                                       events=(Event(0.5, 2.0, "the grey gets lighter"),))
                           for key, path in videos.items()], tmp_path / "m.parquet")
    feats, qa, ckpt = tmp_path / "feats", tmp_path / "qa", tmp_path / "ckpt"
    invoke(pipeline_app, "extract", "--manifest", str(manifest), "--out", str(feats), "--executor", "local",
           "--tasks", "1", "--encoder", encoder, *sampling, "--tokens-per-frame", str(k), "--device", "cpu",
           "--no-progress")
    spec = read_index(feats)["feature_spec"]
    assert spec["tokens_per_frame"] == k and spec["encoder"]["model"] == encoder
    got = {s.key: s.features.shape[0] for s in iter_samples(feats)}
    assert got == {key: n * k for key, n in rows.items()}
    invoke(pipeline_app, "build-qa", "--stage", "1", "--features", str(feats), "--out", str(qa), "--no-progress")
    assert {s.key: s.features.shape for s in iter_samples(qa)} == {
        s.key: s.features.shape for s in iter_samples(feats)}
    invoke(train_app, "--stage", "1", "--shards", str(qa), "--llm", "tiny-random", "--out", str(ckpt),
           "--max-steps", "2", "--micro-batch", "2", "--global-batch", "2", "--zero", "0", "--num-workers", "0",
           "--no-progress", "--token-cache", str(tmp_path / "token-cache"))
    metrics = [json.loads(x) for x in (ckpt / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
