"""`vtl-eval` and `vtl-chat` refuse features whose spec differs from the checkpoint's, in one line naming both; eval
reads answers in the time format the shards record."""
import json
import types
from pathlib import Path

import numpy as np
import pytest
from support.evaluation import TEXTS, eval_shards
from typer.testing import CliRunner

from eval.chat import render
from eval.chat_cli import app as chat_app
from eval.cli import app
from eval.runner import read_eval_shards
from eval.score import score
from pipeline.contract.feature_spec import KEY, FeatureSpec
from pipeline.synth.media import write_video

QVH_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "qvhighlights" / "annotations.jsonl"
CLIP_SPEC = FeatureSpec(encoder_family="open_clip", encoder_model="ViT-L-14", weights_digest="pretrained:openai")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A stage-2-looking tiny checkpoint trained on CLIP ViT-L/14 features with seconds (saved by the trainer's API)."""
    from train.checkpoint import save_checkpoint
    from train.stages import prepare_stage1

    out = tmp_path_factory.mktemp("ckpt")
    cfg = types.SimpleNamespace(stage=1, llm="tiny-random", out=str(out), seed=0, conv_format="v1", attn="sdpa",
                                shards=None, resume=False, from_checkpoint=None)
    model = prepare_stage1(cfg, texts=TEXTS * 10)
    return save_checkpoint(model, out, stage=2, feature_spec=CLIP_SPEC.with_time("seconds").to_json())


@pytest.mark.parametrize("benchmark", ["grounding", "dvc", "qvhighlights"])
def test_eval_refuses_shards_of_another_spec(tmp_path, ckpt, benchmark):
    # encoder "random", relative times; qvhighlights: the spec is checked before any sample is read, so the
    # grounding layout stands in for its shards
    shards = eval_shards(tmp_path / "shards", "dvc" if benchmark == "dvc" else "grounding")
    extra = ["--annotations", str(QVH_SAMPLE)] if benchmark == "qvhighlights" else []
    res = CliRunner().invoke(app, [benchmark, "--checkpoint", str(ckpt), "--shards", str(shards), "--out",
                                   str(tmp_path / "out"), *extra])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())  # the console may wrap the one line
    assert "the checkpoint was trained on open_clip:ViT-L-14 (pretrained:openai) 768-d" in text
    assert "but the evaluation shards in" in text and "random (?) 768-d" in text
    assert "random (?) 768-d, ? frames × ? tokens, relative/100 times" in text  # an index.json without a spec
    assert text.endswith("(differ in encoder_model, time_format)")
    assert not (tmp_path / "out" / "predictions.jsonl").exists()


def test_eval_reads_answers_in_the_shards_time_format(tmp_path):
    shards = eval_shards(tmp_path / "shards", "grounding")
    index = json.loads((shards / "index.json").read_text())
    spec = FeatureSpec(encoder_family=None, encoder_model="random", weights_digest=None, preprocessing=None)
    (shards / "index.json").write_text(json.dumps({**index, KEY: spec.with_time("seconds").to_json()}))
    items, truth = read_eval_shards(shards, "grounding")
    first = items[0]  # vidA, "a man opens a door" at 0-12 s
    preds = [{"video": first.key, "query": first.query, "answer": "From 0.0s to 12.0s."}]
    metrics, plot = score("grounding", preds, {first.key: truth[first.key]})
    assert plot["records"][0]["span"] == [0.0, 12.0] and plot["records"][0]["iou"] == 1.0


def test_chat_refuses_features_of_another_encoder(tmp_path, ckpt):
    frames = np.zeros((20, 48, 64, 3), dtype=np.uint8)
    video = write_video(tmp_path / "clip.mp4", frames, fps=10.0)
    res = CliRunner().invoke(chat_app, [str(video), "--checkpoint", str(ckpt), "--clip-model", "tiny-random",
                                        "--question", "hi", "--max-new-tokens", "2"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "the checkpoint was trained on open_clip:ViT-L-14 (pretrained:openai)" in text
    assert "but this chat's video features (its --clip-* options) are open_clip:tiny-random" in text


def test_chat_shows_seconds_in_the_checkpoints_format():
    from pipeline.contract.timing import TimeFormat

    assert render("From 1.5s to 3.0s.", 10.0, TimeFormat("seconds")).endswith(
        "(in seconds: From 1.5s to 3.0s (1.5–3.0 s).)")


def test_chat_samples_the_video_as_a_seconds_checkpoint_was_trained(tmp_path):
    """`vtl-chat --question` on a checkpoint trained on 16 frames × 4 tokens with times in seconds: the video is
    sampled by the checkpoint's rule (no refusal), and the answer is shown."""
    from pipeline.extract.clip import ClipConfig
    from pipeline.extract.spec import feature_spec
    from train.checkpoint import save_checkpoint
    from train.stages import prepare_stage1

    spec = feature_spec(ClipConfig(model="tiny-random", frames=16, tokens_per_frame=4)).with_time("seconds")
    cfg = types.SimpleNamespace(stage=1, llm="tiny-random", out=str(tmp_path / "c"), seed=0, conv_format="v1",
                                attn="sdpa", shards=None, resume=False, from_checkpoint=None)
    ckpt = save_checkpoint(prepare_stage1(cfg, texts=TEXTS * 10), tmp_path / "c", stage=2,
                           feature_spec=spec.to_json())
    video = write_video(tmp_path / "clip.mp4", np.zeros((30, 48, 64, 3), dtype=np.uint8), fps=10.0)
    res = CliRunner().invoke(chat_app, [str(video), "--checkpoint", str(ckpt), "--clip-model", "tiny-random",
                                        "--question", "When does it get dark?", "--max-new-tokens", "4"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "clip.mp4: 3.0 s" in res.output and "model> " in res.output


def test_web_timeline_reads_the_checkpoints_time_format():
    from eval.web_timeline import answer_spans
    from pipeline.contract.timing import TimeFormat

    seconds = TimeFormat("seconds")
    assert [tuple(s) for s in answer_spans("From 1.5s to 3.0s.", 10.0, seconds)] == [(1.5, 3.0, "1.5s to 3.0s")]
    events = answer_spans("From 0.0s to 2.5s, a door opens. From 2.5s to 9.0s, he sits.", 10.0, seconds)
    assert [(s.start, s.end, s.label) for s in events] == [(0.0, 2.5, "a door opens."), (2.5, 9.0, "he sits.")]
    assert [tuple(s)[:2] for s in answer_spans("From 10 to 30.", 10.0)] == [(1.0, 3.0)]  # VTimeLLM's positions
    assert answer_spans("From 10 to 30.", 10.0, seconds) == []  # not a time in seconds
