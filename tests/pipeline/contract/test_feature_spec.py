"""The feature spec contract: VTimeLLM's default, the plain JSON form, specs derived from older index.json files, and
the one-line refusal naming both specs."""
import json

import pytest

from pipeline.contract import feature_spec as fs
from pipeline.contract.timing import TimeFormat


def test_default_is_vtimellm_and_round_trips_through_plain_json():
    d = fs.DEFAULT
    assert (d.encoder_model, d.weights_digest, d.width, d.sampling, d.frames, d.tokens_per_frame, d.time_format) == \
        ("ViT-L-14", "pretrained:openai", 768, "uniform", 100, 1, "relative")
    assert d.time() == TimeFormat()  # relative on 100 positions: the two-digit rule
    text = json.dumps({fs.KEY: d.to_json()})  # readable without vtl: plain JSON types only
    assert fs.FeatureSpec.from_json(json.loads(text)[fs.KEY]) == d
    assert d.describe() == ("open_clip:ViT-L-14 (pretrained:openai) 768-d, uniform 100 frames × 1 token, "
                            "relative/100 times")
    assert d.encoder == "open_clip:ViT-L-14|pretrained:openai|tv-bicubic-short224-noaa_center224_clipnorm"


def test_fps_rule_and_token_grids():
    s = fs.FeatureSpec(sampling="fps", fps=1.0, frames=350, tokens_per_frame=4, time_format="seconds",
                       time_precision=2)
    assert fs.FeatureSpec.from_json(s.to_json()) == s
    assert s.to_json()["sampling"] == {"rule": "fps", "fps": 1.0, "max_frames": 350}
    assert s.to_json()["time_format"] == {"kind": "seconds", "precision": 2}
    assert "fps 1 max 350 frames × 4 tokens, seconds (2 decimals) times" in s.describe()
    with pytest.raises(ValueError, match="square"):
        fs.FeatureSpec(tokens_per_frame=3)
    with pytest.raises(ValueError, match="fps > 0"):
        fs.FeatureSpec(sampling="fps", fps=0)
    with pytest.raises(ValueError, match="time format"):
        fs.FeatureSpec(time_format="minutes")


def test_an_index_without_a_spec_gives_what_it_records():
    index = {"encoder": "open_clip:ViT-L-14|sha256:0123456789abcdef|tv-bicubic-short224-noaa_center224_clipnorm",
             "num_frames": 100, "dim": 768}
    spec = fs.from_index(index)
    assert (spec.encoder_family, spec.encoder_model, spec.weights_digest, spec.width) == \
        ("open_clip", "ViT-L-14", "sha256:0123456789abcdef", 768)
    assert spec.encoder == index["encoder"] and spec.preprocessing == fs.VTIMELLM_PREPROCESS
    assert spec.time() == TimeFormat()  # the 0-99 scale every older shard set was written on
    other = fs.from_index({"encoder": "random", "num_frames": 4, "dim": 768})
    assert other.encoder_model == "random" and other.encoder_family is None and other.time().frames == 100
    assert fs.from_index({**index, fs.KEY: fs.DEFAULT.to_json()}) == fs.DEFAULT


def test_check_refuses_in_one_line_naming_both_specs():
    seconds = fs.DEFAULT.with_time("seconds")
    fs.check(fs.DEFAULT, seconds, "x {expected} y {found}")  # features agree; times are not compared by default
    with pytest.raises(fs.SpecMismatch) as err:
        fs.check(fs.DEFAULT, seconds, "the checkpoint was trained on {expected}, but the shards in /a{b} are {found}",
                 time=True)
    line = str(err.value)
    assert "\n" not in line and fs.DEFAULT.describe() in line and seconds.describe() in line and "/a{b}" in line
    assert line.endswith("(differ in time_format)")
    wide = fs.FeatureSpec(width=1024, encoder_model="ViT-L-14-336")
    with pytest.raises(fs.SpecMismatch, match=r"differ in encoder_model, width\)$"):
        fs.check(fs.DEFAULT, wide, "{expected} vs {found}")
    legacy = fs.from_index({"encoder": None, "num_frames": None, "dim": 768})
    fs.check(legacy, fs.DEFAULT, "{expected} {found}", time=True)  # unknown fields are not compared


def test_frame_format_counts_the_samples_own_frames():
    spec = fs.FeatureSpec(sampling="fps", fps=1.0, frames=64, time_format="frame")
    assert spec.sample_time({"frame_indices": list(range(12))}).frames == 12
    assert spec.sample_time({}, rows=40).frames == 40
    assert fs.FeatureSpec(frames=64, tokens_per_frame=4, time_format="frame").sample_time({}, 256).frames == 64
    assert fs.FeatureSpec(frames=64).sample_time({"frame_indices": [0]}).frames == 64  # relative: the spec's N
