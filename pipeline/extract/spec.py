"""The feature spec extract writes once per shard set, under `feature_spec` in its index.json: which encoder made the
features (family, model, weights digest, width), which frames (the sampling rule), how many rows a frame gives, and
the pixels the encoder was fed. Readable without vtl: plain JSON. build-qa adds the time format.
"""
from __future__ import annotations

from pipeline.extract.clip import ClipConfig, output_width, weights_file

SPEC_KEY = "feature_spec"


def sampling_rule(cfg: ClipConfig) -> dict:
    """`{"rule": "uniform", "frames": N}` or `{"rule": "fps", "fps": F, "max_frames": M}`."""
    if cfg.fps is not None:
        return {"rule": "fps", "fps": float(cfg.fps), "max_frames": int(cfg.max_frames)}
    return {"rule": "uniform", "frames": int(cfg.frames)}


def weights_digest(cfg: ClipConfig) -> str | None:
    """`sha256:<64 hex>` of the weights file, `pretrained:TAG` for hub weights, `random-seedS` for the seeded random
    weights of the tiny test encoders (two seeds make different features)."""
    path = weights_file(cfg)
    if path:
        from manifests.schema import file_sha256

        return "sha256:" + file_sha256(path)
    return f"pretrained:{cfg.pretrained}" if cfg.pretrained else f"random-seed{cfg.seed}"


def rows_per_sample(cfg: ClipConfig, kind: str) -> int | None:
    """Feature rows of every sample of `kind` (None: the fps rule, where each video has its own count)."""
    if kind == "image":
        return cfg.tokens_per_frame
    return None if cfg.fps is not None else cfg.frames * cfg.tokens_per_frame


def extract_spec(cfg: ClipConfig) -> dict:
    """The spec of features made with `cfg` (the preprocessing adds `antialias` and `fast_resize`: both change the
    features)."""
    return {
        "encoder": {"family": cfg.family, "model": cfg.model, "weights": weights_digest(cfg),
                    "width": int(output_width(cfg))},
        "sampling": sampling_rule(cfg),
        "tokens_per_frame": int(cfg.tokens_per_frame),
        "preprocessing": {**cfg.pixel_spec.to_json(), "fast_resize": bool(cfg.fast_resize)},
    }
