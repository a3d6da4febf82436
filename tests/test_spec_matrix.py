"""Extract → build-qa → vtl-train (two steps of stage 1, then two of stage 2 from it) → vtl-eval grounding through
the real commands, for encoders, frame rules, tokens per frame and time formats beyond VTimeLLM's, chosen so every
value of each axis is run at least once: {open_clip ViT-L/14-shaped, open_clip SigLIP-shaped, Hugging Face
CLIPVision} × {uniform 100, uniform 64, fps 1 max 64} × {1, 4 tokens} × {relative, seconds}. The fps case mixes
frame counts in one shard set (videos of 4 s and 6.5 s). Each case checks the files on disk: the spec in every
index.json, the checkpoints' vtl_checkpoint.json, the evaluation's metrics.json."""
from __future__ import annotations

import json

import pytest
from support.cli import dist_env, invoke  # noqa: F401  (dist_env: a fixture)
from support.encoders import hf_tower
from support.extract import write_rows

from manifests.schema import Event, ManifestRow
from pipeline.contract.feature_spec import KEY, from_index
from pipeline.contract.shards import iter_samples, read_index
from pipeline.synth.media import frame_counter_video

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning")]
CASES = {  # encoder, sampling options, tokens per frame, time format, expected frames per video (by key)
    "vitl-uniform100-k1-relative": ("tiny-random", [], 1, "relative", {"a": 100, "b": 100}),
    "siglip-fps1-k4-seconds": ("tiny-random-siglip", ["--fps", "1", "--max-frames", "64"], 4, "seconds",
                               {"a": 4, "b": 6}),
    "hfclip-uniform64-k1-seconds": ("hf-clip", ["--frames", "64"], 1, "seconds", {"a": 64, "b": 64}),
    "vitl-uniform64-k4-relative": ("tiny-random", ["--frames", "64"], 4, "relative", {"a": 64, "b": 64}),
}
EVENTS = (Event(0.5, 2.0, "the grey gets lighter"), Event(2.0, 3.5, "the grey keeps getting lighter"))
TRAIN = ("--llm", "tiny-random", "--max-steps", "2", "--micro-batch", "2", "--global-batch", "2", "--zero", "0",
         "--num-workers", "0", "--no-progress")





def extract(tmp_path, encoder: str, sampling: list[str], k: int):
    from pipeline.cli import app as pipeline_app

    videos = {"a": frame_counter_video(tmp_path / "a.mp4", 40, 10.0),
              "b": frame_counter_video(tmp_path / "b.mp4", 65, 10.0)}
    rows = [ManifestRow(key=key, dataset="synth", kind="video", media=str(path), caption=f"clip {key}",
                        events=EVENTS) for key, path in videos.items()]
    feats = tmp_path / "feats"
    invoke(pipeline_app, "extract", "--manifest", str(write_rows(rows, tmp_path / "m.parquet")), "--out", str(feats),
           "--executor", "local", "--tasks", "1", "--encoder", encoder, *sampling, "--tokens-per-frame", str(k),
           "--device", "cpu", "--no-progress")
    return feats


def build(feats, out, time_format: str, *what: str) -> dict:
    """build-qa into `out`; the output's feature spec (index.json), checked against the input's."""
    from pipeline.cli import app as pipeline_app

    invoke(pipeline_app, "build-qa", *what, "--features", str(feats), "--out", str(out), "--time-format",
           time_format, "--no-progress")
    spec = read_index(out)[KEY]
    extracted = {key: value for key, value in read_index(feats)[KEY].items() if key != "pixels"}
    assert {**spec, "time_format": None} == {**extracted, "time_format": None}
    assert spec["time_format"]["kind"] == time_format
    return spec


def train(tmp_path, shards, out, stage: int, *more: str) -> dict:
    from train.cli import app as train_app

    invoke(train_app, "--stage", str(stage), "--shards", str(shards), "--out", str(out), *TRAIN, *more,
           "--token-cache", str(tmp_path / "token-cache"))
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    return json.loads((out / "vtl_checkpoint.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_extract_build_qa_train_eval(case, tmp_path, dist_env):
    from eval.cli import app as eval_app

    encoder, sampling, k, time_format, frames = CASES[case]
    if encoder == "hf-clip":
        encoder = str(hf_tower(tmp_path / "hf-clip", "clip"))
    feats = extract(tmp_path, encoder, sampling, k)
    spec = read_index(feats)[KEY]
    assert spec["tokens_per_frame"] == k and spec["encoder"]["model"] == encoder
    assert spec["sampling"] == ({"rule": "fps", "fps": 1.0, "max_frames": 64} if sampling[:1] == ["--fps"] else
                                {"rule": "uniform", "frames": 100 if not sampling else 64})
    samples = {s.key: s for s in iter_samples(feats)}
    assert {key: s.features.shape[0] for key, s in samples.items()} == {key: n * k for key, n in frames.items()}
    assert {key: len(s.meta["frame_times"]) for key, s in samples.items()} == frames

    s1 = build(feats, tmp_path / "s1", "relative", "--stage", "1")
    s2 = build(feats, tmp_path / "s2", time_format, "--stage", "2")
    ev = build(feats, tmp_path / "ev", time_format, "--benchmark", "grounding")
    assert {s.key: s.features.shape for s in iter_samples(tmp_path / "s2")} == {
        key: s.features.shape for key, s in samples.items()}
    if time_format == "seconds":  # the answers hold times in seconds ("From 0.5s to 2.0s")
        turns = [t["value"] for s in iter_samples(tmp_path / "s2") for t in s.conversation["turns"]]
        assert any("0.5s" in t for t in turns) and any("2.0s" in t for t in turns)

    c1 = train(tmp_path, tmp_path / "s1", tmp_path / "c1", 1)
    assert c1[KEY] == s1
    c2 = train(tmp_path, tmp_path / "s2", tmp_path / "c2", 2, "--from", str(tmp_path / "c1"))
    assert c2[KEY] == s2
    assert from_index(read_index(tmp_path / "ev")) == from_index(c2)

    out = tmp_path / "eval"
    invoke(eval_app, "grounding", "--checkpoint", str(tmp_path / "c2"), "--shards", str(tmp_path / "ev"), "--out",
           str(out), "--max-new-tokens", "8", "--device", "cpu")
    metrics = json.loads((out / "metrics.json").read_text())
    assert ev["time_format"]["kind"] == time_format
    predictions = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4  # two videos × two events
    scores = metrics.get("metrics", metrics)  # every query scored (two steps of training: most answers unparsable)
    assert scores["n"] == 4 and 0.0 <= scores["mIoU"] <= 100.0 and 0.0 <= scores["unparsed"] <= 100.0, metrics


@pytest.mark.parametrize("sampling, per_video", [({}, 100), ({"frames": 64, "rate": None, "max_frames": None}, 64),
                                                 ({"frames": 100, "rate": 1.0, "max_frames": 64}, 64)])
def test_extract_batches_count_the_sampling_rules_frames(sampling, per_video):
    """`--batch-size` frames per batch: a video counts the rule's frames (fps: its most), an image one."""
    from pipeline.extract.executors import Job, batches
    from pipeline.extract.steps import SampleFrames

    job = Job([SampleFrames(sampling=sampling)], batch_frames=256, on_task_start=print, on_task_done=print)
    assert job.video_frames == per_video
    rows = [{"kind": "video"}] * 9 + [{"kind": "image"}] * 3
    sizes = [len(b) for b in batches(rows, job.batch_frames, job.video_frames)]
    per_batch = -(-256 // per_video)  # whole videos until the frames reach the batch size
    assert sizes[0] == per_batch and sum(sizes) == 12
    assert len(sizes) == -(-9 // per_batch) + (9 % per_batch == 0)
