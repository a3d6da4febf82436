"""The feature spec: what a shard set's features are (encoder, width, frame sampling, tokens per frame,
preprocessing) and how its text writes times. One contract, recorded once per shard set in `index.json` under the
key `feature_spec` and in every checkpoint, compared wherever features meet a model.

The JSON form is plain (readable without vtl):

    {"encoder": {"family": "open_clip", "model": "ViT-L-14", "weights": "pretrained:openai"}, "width": 768,
     "sampling": {"rule": "uniform", "frames": 100}, "tokens_per_frame": 1,
     "preprocessing": "tv-bicubic-short224-noaa_center224_clipnorm",
     "time_format": {"kind": "relative", "positions": 100}}

`sampling` is `{"rule": "fps", "fps": F, "max_frames": M}` for the fps rule; `time_format` carries `precision` for
`seconds`. A shard set written before the spec existed has none: `from_index` derives it from what its index.json
records (encoder id, D), leaving what it cannot know as None, and `check` compares only what both sides know.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from pipeline.contract.timing import NUM_FRAMES, TimeFormat

KEY = "feature_spec"
"""The key of the spec in index.json and in vtl_checkpoint.json."""
SAMPLING_RULES = ("uniform", "fps")
VTIMELLM_PREPROCESS = "tv-bicubic-short224-noaa_center224_clipnorm"
"""extract's default preprocessing id (the third part of its encoder id), VTimeLLM's resize and crop."""
FEATURE_FIELDS = ("encoder_family", "encoder_model", "weights_digest", "width", "sampling", "frames", "fps",
                  "tokens_per_frame", "preprocessing")
"""What makes features interchangeable; the time format is compared separately (`check(..., time=True)`)."""


@dataclass(frozen=True)
class FeatureSpec:
    """A shard set's features and time format. None = not known (a spec derived from an older index.json)."""

    encoder_family: str | None = "open_clip"
    encoder_model: str | None = "ViT-L-14"
    weights_digest: str | None = "pretrained:openai"
    """As extract names weights: `sha256:<16 hex>` of a weights file, `pretrained:<tag>`, `random-seed<N>`."""
    width: int | None = 768
    """Feature width D (the projector's input)."""
    sampling: str | None = "uniform"
    """`uniform` (N frames spread over the video, VTimeLLM) or `fps` (F frames a second, at most M)."""
    frames: int | None = NUM_FRAMES
    """`uniform`: N; `fps`: the most frames M."""
    fps: float | None = None
    """`fps` rule only: frames per second."""
    tokens_per_frame: int | None = 1
    """1 = the pooled embedding (VTimeLLM); k×k = the patch grid average-pooled to k×k (a square)."""
    preprocessing: str | None = VTIMELLM_PREPROCESS
    time_format: str = "relative"
    time_precision: int = 1
    """`seconds` only: decimals."""
    time_positions: int | None = None
    """`relative` only: the N positions times are written on; None = the sampling rule's frames. A spec derived from
    an older index.json says 100, the scale vtl always wrote whatever the frame count."""

    def __post_init__(self) -> None:
        if self.sampling is not None and self.sampling not in SAMPLING_RULES:
            raise ValueError(f"sampling rule must be one of {', '.join(SAMPLING_RULES)}, got {self.sampling!r}")
        if self.sampling == "fps" and not (isinstance(self.fps, (int, float)) and self.fps > 0):
            raise ValueError(f"the fps sampling rule needs fps > 0, got {self.fps!r}")
        if self.sampling == "uniform" and self.fps is not None:
            raise ValueError("the uniform sampling rule takes no fps")
        for name in ("width", "frames", "tokens_per_frame"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        k = self.tokens_per_frame
        if k is not None and math.isqrt(k) ** 2 != k:
            raise ValueError(f"tokens per frame must be a square (1, 4, 9, 16 ...), got {k}")
        TimeFormat(self.time_format, self.time_precision)  # validates both
        # relative times count the sampling rule's frames unless told otherwise; the other formats need no scale
        positions = (self.time_positions or self.frames) if self.time_format == "relative" else None
        object.__setattr__(self, "time_positions", positions)

    @property
    def encoder(self) -> str | None:
        """The encoder id as extract writes it into index.json and meta.json (`family:model|weights|preprocessing`)."""
        if self.encoder_family is None:
            return self.encoder_model
        return f"{self.encoder_family}:{self.encoder_model}|{self.weights_digest}|{self.preprocessing}"

    def time(self, frames: int | None = None) -> TimeFormat:
        """The time format bound to a sample's N (default: the spec's frames, VTimeLLM's 100)."""
        if self.time_format == "relative":
            frames = self.time_positions or self.frames
        return TimeFormat(self.time_format, self.time_precision, frames or self.frames or NUM_FRAMES)

    def sample_time(self, meta: dict | None, rows: int | None = None) -> TimeFormat:
        """The time format of one sample: `relative` counts the spec's N positions (VTimeLLM: 100); `frame` counts
        the sample's own sampled frames (its meta.json `frame_indices`, else its feature rows / tokens per frame),
        which the fps rule makes differ per sample."""
        if self.time_format != "frame":
            return self.time()
        indices = meta.get("frame_indices") if isinstance(meta, dict) else None
        if isinstance(indices, list) and indices:
            return self.time(len(indices))
        return self.time(rows // (self.tokens_per_frame or 1) if rows else None)

    def with_time(self, kind: str, precision: int = 1) -> "FeatureSpec":
        return replace(self, time_format=kind, time_precision=precision)

    def describe(self) -> str:
        """One line: `open_clip:ViT-L-14 (pretrained:openai) 768-d, uniform 100 frames × 1 token, relative times`."""
        def known(value, text: str) -> str:
            return text if value is not None else "?"

        encoder = f"{self.encoder_family}:{self.encoder_model}" if self.encoder_family else str(self.encoder_model)
        rule = (f"fps {self.fps:g} max {known(self.frames, str(self.frames))}" if self.sampling == "fps"
                else f"uniform {known(self.frames, str(self.frames))}" if self.sampling else "?")
        k = known(self.tokens_per_frame, str(self.tokens_per_frame))
        times = (f"seconds ({self.time_precision} decimals)" if self.time_format == "seconds" else
                 f"relative/{self.time().frames}" if self.time_format == "relative" else self.time_format)
        return (f"{encoder} ({known(self.weights_digest, str(self.weights_digest))}) "
                f"{known(self.width, str(self.width))}-d, {rule} frames × {k} token"
                f"{'' if self.tokens_per_frame == 1 else 's'}, {times} times")

    def to_json(self) -> dict:
        sampling = ({"rule": "fps", "fps": self.fps, "max_frames": self.frames} if self.sampling == "fps"
                    else {"rule": self.sampling, "frames": self.frames})
        return {"encoder": {"family": self.encoder_family, "model": self.encoder_model,
                            "weights": self.weights_digest},
                "width": self.width, "sampling": sampling, "tokens_per_frame": self.tokens_per_frame,
                "preprocessing": self.preprocessing,
                "time_format": self.time().to_json()}

    @classmethod
    def from_json(cls, data: dict) -> "FeatureSpec":
        """The spec of a `feature_spec` object; a malformed one is a ValueError naming what is wrong."""
        try:
            enc, sampling, time = data["encoder"], data["sampling"], data.get("time_format") or {"kind": "relative"}
            return cls(encoder_family=enc.get("family"), encoder_model=enc.get("model"),
                       weights_digest=enc.get("weights"), width=data.get("width"), sampling=sampling.get("rule"),
                       frames=sampling.get("max_frames") if sampling.get("rule") == "fps" else sampling.get("frames"),
                       fps=sampling.get("fps"), tokens_per_frame=data.get("tokens_per_frame"),
                       preprocessing=data.get("preprocessing"), time_format=time.get("kind", "relative"),
                       time_precision=time.get("precision", 1), time_positions=time.get("positions"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{KEY} is malformed ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_encoder_id(cls, encoder: str | None, frames: int | None, width: int | None) -> "FeatureSpec":
        """What an index.json without a spec says: the encoder id (extract's `family:model|weights|preprocessing`,
        or any other name) and D; times on VTimeLLM's 100 positions, the only scale vtl wrote before."""
        family = model = weights = pre = None
        if isinstance(encoder, str) and ":" in encoder.split("|")[0] and encoder.count("|") == 2:
            head, weights, pre = encoder.split("|")
            family, model = head.split(":", 1)
        else:
            model = encoder
        # N there counts feature rows per sample (1 for an image set, none for a mixed one), not a sampling rule:
        # comparing it would refuse VTimeLLM's own path (stage 1 on images, stage 2 on videos), so it is not claimed
        del frames
        return cls(encoder_family=family, encoder_model=model, weights_digest=weights, width=width, sampling=None,
                   frames=None, tokens_per_frame=None, preprocessing=pre, time_positions=NUM_FRAMES)


DEFAULT = FeatureSpec()
"""VTimeLLM's: CLIP ViT-L/14 (OpenAI weights), 768-d, 100 uniform frames, the pooled token, relative times."""


def from_index(index: dict) -> FeatureSpec:
    """A shard set's spec: its index.json's `feature_spec`, or one derived from the older fields (encoder, N, D)."""
    if isinstance(index.get(KEY), dict):
        return FeatureSpec.from_json(index[KEY])
    return FeatureSpec.from_encoder_id(index.get("encoder"), index.get("num_frames"), index.get("dim"))


def from_checkpoint(meta: dict) -> FeatureSpec:
    """A checkpoint's spec (vtl_checkpoint.json); an older checkpoint's from its encoder id and feature width."""
    if isinstance(meta.get(KEY), dict):
        return FeatureSpec.from_json(meta[KEY])
    return FeatureSpec.from_encoder_id(meta.get("encoder"), None, meta.get("feature_dim"))


def differences(expected: FeatureSpec, found: FeatureSpec, time: bool = False) -> list[str]:
    """The fields both specs know and that differ (plus the time format when `time`)."""
    names = [*FEATURE_FIELDS, *(("time_format", "time_precision", "time_positions") if time else ())]
    out = []
    for name in names:
        a, b = getattr(expected, name), getattr(found, name)
        if name == "time_precision" and "seconds" not in (expected.time_format, found.time_format):
            continue
        if name == "time_positions":
            a, b = expected.time().frames, found.time().frames
            if "relative" not in (expected.time_format, found.time_format):
                continue
        if a is not None and b is not None and a != b:
            out.append(name)
    return out


def check(expected: FeatureSpec, found: FeatureSpec, what: str, time: bool = False) -> None:
    """Refuse, in one line naming both specs, features (or a time format, with `time`) that differ from `expected`.

    `what` says where each spec comes from, e.g. "the checkpoint was trained on {expected}, but the shards in X are
    {found}". Fields unknown on either side (None) are not compared."""
    diff = differences(expected, found, time)
    if diff:
        # replace, not str.format: `what` may hold a path with braces
        line = what.replace("{expected}", expected.describe()).replace("{found}", found.describe())
        raise SpecMismatch(f"{line} (differ in {', '.join(diff)})")


class SpecMismatch(ValueError):
    """Features or a time format that do not match what a model was trained on."""
