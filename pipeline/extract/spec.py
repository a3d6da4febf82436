"""The feature spec extract writes once per shard set, under `feature_spec` in its index.json, in the contract's form
(pipeline.contract.feature_spec): which encoder made the features (family, model, weights digest), their width, which
frames (the sampling rule), how many rows a frame gives and the preprocessing id. The encoder fields are read back
from extract's encoder id, so a spec derived from an older index.json (which records only that id) compares equal
for the same settings. The pixels the encoder was fed are spelled out under `pixels` (information, not compared).
build-qa adds the time format it renders.
"""
from __future__ import annotations

from pipeline.contract.feature_spec import KEY as SPEC_KEY
from pipeline.contract.feature_spec import FeatureSpec
from pipeline.extract.clip import ClipConfig, encoder_id, output_width

__all__ = ["SPEC_KEY", "extract_spec", "rows_per_sample"]


def rows_per_sample(cfg: ClipConfig, kind: str) -> int | None:
    """Feature rows of every sample of `kind` (None: the fps rule, where each video has its own count)."""
    if kind == "image":
        return cfg.tokens_per_frame
    return None if cfg.fps is not None else cfg.frames * cfg.tokens_per_frame


def feature_spec(cfg: ClipConfig) -> FeatureSpec:
    """The contract's spec of features made with `cfg` (times relative to its frames until build-qa says else)."""
    head, weights, preprocessing, *extras = encoder_id(cfg).split("|")
    family, model = head.split(":", 1)
    pixels = [part for part in extras if not part.startswith(("fps", "frames", "tokens"))]
    fps = cfg.fps is not None
    return FeatureSpec(encoder_family=family, encoder_model=model, weights_digest=weights,
                       width=int(output_width(cfg)), sampling="fps" if fps else "uniform",
                       frames=int(cfg.max_frames if fps else cfg.frames), fps=float(cfg.fps) if fps else None,
                       tokens_per_frame=int(cfg.tokens_per_frame), preprocessing="|".join([preprocessing, *pixels]))


def extract_spec(cfg: ClipConfig) -> dict:
    """`feature_spec` as index.json holds it: the contract's JSON plus the pixel steps spelled out (`pixels`:
    resize, crop, mean/std, interpolation, antialias, fast resize)."""
    return {**feature_spec(cfg).to_json(), "pixels": {**cfg.pixel_spec.to_json(), "fast_resize": bool(cfg.fast_resize)}}
