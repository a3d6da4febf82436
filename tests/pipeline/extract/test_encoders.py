"""Encoders beyond ViT-L/14, frame rules beyond 100 uniform frames, and patch tokens per frame: widths and pixels read
from the model's own config, one memory estimate for every family, the fps rule's frame choice, and the feature spec
a run writes into index.json."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support.encoders import hf_tower
from support.extract import config, make_media, write_rows

from manifests.schema import ManifestRow
from pipeline.contract import timing
from pipeline.contract.shards import iter_samples, read_index
from pipeline.extract import encoders
from pipeline.extract.clip import ClipConfig, cpu_memory_bytes, encoder_id, load_model
from pipeline.extract.job import run_extract
from pipeline.extract.single import extract_one
from pipeline.extract.spec import extract_spec

SIGLIP = ClipConfig(model="tiny-random-siglip", device="cpu")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("media"))


def test_fps_rule_picks_frames_at_the_rate_and_spreads_long_videos():
    # 150 frames at 25 fps = 6 s: 1 fps gives one frame a second, at 0, 25, … 125
    assert timing.sample_indices(150, 25.0, rate=1.0, max_frames=64) == [0, 25, 50, 75, 100, 125]
    assert timing.sample_indices(150, 25.0, rate=0.5, max_frames=64) == [0, 50, 100]
    # more frames than max: the uniform rule with max frames, first and last included
    assert timing.sample_indices(150, 25.0, rate=10.0, max_frames=8) == timing.frame_indices(150, 25.0, None, 8)
    # a window: the rate counts from its first frame
    assert timing.sample_indices(150, 25.0, (1.5, 4.2), rate=1.0, max_frames=64) == [37, 62]
    assert timing.sample_indices(5, 25.0, rate=1.0, max_frames=64) == [0]  # shorter than a second: one frame
    assert timing.sample_indices(150, 25.0) == timing.frame_indices(150, 25.0)  # uniform 100 is VTimeLLM's
    with pytest.raises(ValueError, match="frame rate"):
        timing.sample_indices(150, 0.0, rate=1.0, max_frames=8)


def test_options_are_checked():
    for kw, match in (({"tokens_per_frame": 3}, "square"), ({"fps": 1.0}, "both"), ({"frames": 0}, "≥ 1"),
                      ({"fps": 1.0, "max_frames": 8, "frames": 64}, "without --frames"),
                      ({"model": "tiny-random", "encoder": "tiny-random-siglip"}, "once"),
                      ({"encoder": "ViT-L-14-336"}, "needs weights")):
        with pytest.raises(ValueError, match=match):
            ClipConfig(**{"model": "tiny-random", **kw} if "encoder" not in kw else kw)
    assert ClipConfig(encoder="tiny-random-siglip").model == "tiny-random-siglip"


def test_siglip_shaped_open_clip_width_pixels_and_token_grid(media):
    assert SIGLIP.family == "open_clip" and SIGLIP.pixel_spec == encoders.SIGLIP_PIXELS
    feats, meta = extract_one(media["v60"], SIGLIP)
    assert feats.shape == (100, 128) and np.isfinite(feats).all()
    grid, meta4 = extract_one(media["v60"], ClipConfig(model="tiny-random-siglip", device="cpu", tokens_per_frame=4))
    assert grid.shape == (400, 128) and meta4["frame_indices"] == meta["frame_indices"]
    # the 4 rows of a frame are its 4×4 patch grid pooled 2×2: their mean is the mean of all patches
    model = load_model(SIGLIP)
    from pipeline.extract.pixels import preprocess
    from pipeline.extract.towers import patch_tokens

    src_px = preprocess(np.zeros((1, 48, 80, 3), np.uint8), spec=SIGLIP.pixel_spec)
    with torch.inference_mode():
        tokens = patch_tokens(model, src_px)
    assert tokens.shape == (1, 16, 128)  # no class token: SigLIP's trunk


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hugging_face_towers_from_a_local_folder(media, tmp_path, kind):
    folder = hf_tower(tmp_path / kind, kind)
    cfg = ClipConfig(encoder=str(folder), device="cpu", frames=16, tokens_per_frame=4)
    assert cfg.family == "hf" and cfg.pixel_spec.size == 32
    assert cfg.pixel_spec.resize == ("short_side" if kind == "clip" else "squash")
    feats, meta = extract_one(media["v150"], cfg)
    assert feats.shape == (64, 64) and len(meta["frame_times"]) == 16
    assert encoder_id(cfg).startswith(f"hf:{folder}|sha256:") and "frames16" in encoder_id(cfg)
    spec = extract_spec(cfg)
    assert spec["encoder"]["family"] == "hf" and spec["width"] == 64
    assert spec["encoder"]["weights"] == encoder_id(cfg).split("|")[1] and spec["encoder"]["weights"].startswith("sha256:")
    assert spec["sampling"] == {"rule": "uniform", "frames": 16} and spec["tokens_per_frame"] == 4


def test_memory_estimate_for_every_family(tmp_path):
    folder = hf_tower(tmp_path / "clip", "clip")
    hf = ClipConfig(encoder=str(folder), device="cpu")
    params = sum(p.numel() for p in load_model(hf).parameters())
    shape = encoders.vision_shape(str(folder))
    assert abs(encoders.estimate_params(shape) - params) / params < 0.05
    timm_params = sum(p.numel() for p in load_model(SIGLIP).parameters())
    assert encoders.estimate_params(encoders.vision_shape("tiny-random-siglip")) == timm_params
    # real configs, no weights: ViT-L-14-336 (native) and SO400M SigLIP (timm, on the meta device)
    big = [cpu_memory_bytes(ClipConfig(encoder=n, pretrained="x"), 64)
           for n in ("ViT-L-14", "ViT-L-14-336", "ViT-SO400M-14-SigLIP-384")]
    assert big[0] < big[1] < big[2]
    assert 1.15e9 < big[1] < 8e9 and big[2] > 1.6e9  # SO400M: 0.43 G params, 729 tokens a frame


def test_fps_run_writes_variable_frames_and_the_spec(media, tmp_path):
    rows = [ManifestRow(key="v60", dataset="synth", kind="video", media=str(media["v60"])),
            ManifestRow(key="v150", dataset="synth", kind="video", media=str(media["v150"]))]
    clip = ClipConfig(model="tiny-random-siglip", device="cpu", fps=1.0, max_frames=64, tokens_per_frame=4)
    out = tmp_path / "feats"
    run_extract(config(write_rows(rows, tmp_path / "m.parquet"), out, clip=clip, executor="local", tasks=1))
    samples = {s.key: s for s in iter_samples(out)}
    assert samples["v60"].features.shape == (6 * 4, 128) and samples["v150"].features.shape == (6 * 4, 128)
    assert samples["v150"].meta["frame_times"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    index = read_index(out)
    assert index["num_frames"] is None and index["dim"] == 128
    spec = json.loads(json.dumps(index["feature_spec"]))
    pre = encoder_id(clip).split("|")
    assert spec == {"encoder": {"family": "open_clip", "model": "tiny-random-siglip", "weights": "random-seed0"},
                    "width": 128, "sampling": {"rule": "fps", "fps": 1.0, "max_frames": 64}, "tokens_per_frame": 4,
                    "preprocessing": "|".join([pre[2], pre[3]]),
                    "time_format": {"kind": "relative", "positions": 64},
                    "pixels": {"resize": "squash:64", "crop": None, "mean": [0.5] * 3, "std": [0.5] * 3,
                               "interpolation": "bicubic", "antialias": False, "fast_resize": False}}


def test_default_spec_is_vtimellms():
    spec = extract_spec(ClipConfig(model="tiny-random"))
    assert spec["width"] == 768 and spec["sampling"] == {"rule": "uniform", "frames": 100}
    assert spec["tokens_per_frame"] == 1 and spec["pixels"]["resize"] == "short_side:224"
    # the contract reads it back, and a spec derived from an older index.json (its encoder id only) agrees with it
    from pipeline.contract.feature_spec import FeatureSpec, check

    new = FeatureSpec.from_json(spec)
    old = FeatureSpec.from_encoder_id(encoder_id(ClipConfig(model="tiny-random")), 100, 768)
    assert new.describe().startswith("open_clip:tiny-random (random-seed0) 768-d, uniform 100 frames × 1 token")
    check(old, new, "old shards")
    assert encoder_id(ClipConfig(model="tiny-random")) == \
        "open_clip:tiny-random|random-seed0|tv-bicubic-short224-noaa_center224_clipnorm"
