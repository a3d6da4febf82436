"""`vtl-eval` and `vtl-chat` refuse features whose spec differs from the checkpoint's, in one line naming both; eval
reads answers in the time format the shards record."""
import json
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from eval.chat import render
from eval.chat_cli import app as chat_app
from eval.cli import app
from eval.runner import read_eval_shards
from eval.score import score
from pipeline.contract.feature_spec import KEY, FeatureSpec
from pipeline.synth.media import write_video
from tests._eval_helpers import TEXTS, eval_shards

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
