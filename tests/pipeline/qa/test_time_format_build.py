"""`build-qa --time-format`: the text is written in the chosen format, index.json records the input's feature spec
with it, and the default output is what it was (two digits, the same shard bytes)."""
import json
import re

from support.qa import shard_hashes, video_meta, write_feature_shards
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.contract.feature_spec import KEY, from_index
from pipeline.contract.shards import iter_samples, read_index
from pipeline.qa.build import BuildQaConfig, run_build_qa
from pipeline.qa.rules import identify_template

EVENTS = [{"start": 1.0, "end": 12.5, "caption": "A man opens a door."},
          {"start": 12.5, "end": 29.0, "caption": "He sits down on a chair."}]


def _features(tmp_path):
    metas = [video_meta(f"v{i}", 30.0 + i, EVENTS) for i in range(6)]
    write_feature_shards(tmp_path / "feat", metas)
    return tmp_path / "feat"


def test_seconds_text_and_recorded_spec(tmp_path):
    feat = _features(tmp_path)
    res = CliRunner().invoke(app, ["build-qa", "--features", str(feat), "--out", str(tmp_path / "s2"), "--stage",
                                   "2", "--time-format", "seconds", "--no-progress"])
    assert res.exit_code == 0, res.output
    index = read_index(tmp_path / "s2")
    assert index[KEY]["time_format"] == {"kind": "seconds", "precision": 1}
    assert index[KEY]["encoder"]["model"] == "test-random"  # the input's (derived) spec, carried over
    spec = from_index(index)
    text = " ".join(t["value"] for s in iter_samples(tmp_path / "s2") for t in s.conversation["turns"])
    assert re.search(r"\b12\.5s\b", text) and re.search(r"\b1\.0s\b", text)
    assert not re.search(r"(?<![\d.])\d\d(?![\d.s])", text)  # no two-digit position left
    for s in iter_samples(tmp_path / "s2"):
        questions = [t["value"] for t in s.conversation["turns"] if t["from"] == "human"]
        assert [identify_template(q, spec.time()) for q in questions] == s.conversation["templates"]


def test_frame_and_eval_queries_follow_the_format(tmp_path):
    feat = _features(tmp_path)
    run_build_qa(BuildQaConfig(features=feat, out=tmp_path / "f", stage="2", time_format="frame", dense_ratio=1.0,
                               progress=False))
    answer = next(iter_samples(tmp_path / "f")).conversation["turns"][1]["value"]
    # 100 frames over 30 s, frame k at k·30/99 s: 1 s → 3.3, 12.5 s → 41.25, 29 s → 95.7
    assert answer == "From 3 to 41, A man opens a door. From 41 to 96, He sits down on a chair."
    run_build_qa(BuildQaConfig(features=feat, out=tmp_path / "dvc", benchmark="dvc", time_format="seconds",
                               progress=False))
    query = next(iter_samples(tmp_path / "dvc")).conversation["queries"][0]["query"]
    assert query.endswith('"timestamps": "from xx.xs to xx.xs"}.')


def test_default_is_unchanged(tmp_path):
    feat = _features(tmp_path)
    run_build_qa(BuildQaConfig(features=feat, out=tmp_path / "a", stage="2", progress=False))
    run_build_qa(BuildQaConfig(features=feat, out=tmp_path / "b", stage="2", time_format="relative",
                               progress=False))
    assert shard_hashes(tmp_path / "a") == shard_hashes(tmp_path / "b")
    text = " ".join(t["value"] for s in iter_samples(tmp_path / "a") for t in s.conversation["turns"])
    assert re.search(r"\b03 to 42\b", text)  # 1 s and 12.5 s of 30 s on VTimeLLM's 0-99 scale
    assert json.loads((tmp_path / "a" / "index.json").read_text())[KEY]["time_format"] == \
        {"kind": "relative", "positions": 100}
