"""The image encoder of extract: which model, which weights, which frames, the pixels → features path, the encoder id.

Default path (DESIGN.md "Pixels → features", VTimeLLM-compatible): RGB uint8 → /255 → torchvision resize of the short
side to 224 (bicubic, antialias=False, as VTimeLLM's torchvision <0.17 ran it) → centre crop 224 → CLIP mean/std →
`encode_image` (projected CLS, not L2-normalised) → float16; the pixel steps are in `pipeline/extract/pixels.py`.
`fast_resize` moves the resize into the decoder (its cosine similarity to the default path is measured in
tests/pipeline/extract/test_clip.py and bench/bench_extract.py).

Models: open_clip `ViT-L-14` with weights from a local file (OpenAI's TorchScript `ViT-L-14.pt` as VTimeLLM ships it,
an OpenAI-format state dict, or an open_clip checkpoint) or `pretrained="openai"` (hub); `tiny-random` is a small
open_clip config with seeded random weights and output dim 768, for tests and CPU demos. Other encoders (`--encoder`:
any open_clip name with local weights, a local Hugging Face vision tower; pipeline/extract/encoders.py) bring their
own width and pixels; `frames`/`fps`/`max_frames` choose the frames (pipeline.contract.timing.sample_indices) and
`tokens_per_frame` the rows per frame (pipeline/extract/towers.py). The defaults are VTimeLLM's, bit-identical.
torch and open_clip are imported inside functions so that importing this module stays cheap.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from infra.options import Group
from pipeline.contract.provenance import TINY_RANDOM
from pipeline.contract.shards import FEATURE_DIM
from pipeline.contract.timing import NUM_FRAMES
from pipeline.extract import encoders
from pipeline.extract.clip_weights import (
    ModelLoadError,
    image_tower,
    load_weights_file,
    open_clip_model,
    require_pretrained,
    tiny_clip,
)
from pipeline.extract.encoders import TINY_CONFIG, TINY_NAMES  # noqa: F401  (TINY_CONFIG: re-exported for bench)
from pipeline.extract.pixels import DEFAULT_PIXELS, PixelSpec, normalise

MODELS = ("ViT-L-14", *TINY_NAMES)
"""The names vtl ships tests for; `--encoder` takes any open_clip name or a local Hugging Face folder."""
PREPROCESS_DEFAULT = "tv-bicubic-short224-noaa_center224_clipnorm"
PREPROCESS_FAST = "decoder-resize-short224_center224_clipnorm"


@dataclass(frozen=True)
class ClipConfig:
    """Which CLIP encodes the frames.

    model: "ViT-L-14" (real), "tiny-random" (seeded random weights, output dim 768), "tiny-random-siglip" (a
        SigLIP-shaped one), any open_clip model name with weights, or a local Hugging Face vision-tower folder.
    weights: local checkpoint file (OpenAI TorchScript/state dict or open_clip checkpoint); None for none.
    pretrained: an open_clip pretrained tag fetched from the hub (e.g. "openai"); exclusive with `weights`.
    fast_resize: resize inside the decoder instead of the default torchvision path (an option, not the default).
    device: "auto" (cuda when available), "cpu" or "cuda". fp16 on GPU, float32 on CPU.
    seed: seed of the tiny-random weights.
    encoder: the image encoder, an open_clip model name or a local Hugging Face folder (same as --clip-model).
    frames: frames per video, spread uniformly (VTimeLLM: 100).
    fps: frames a second instead (with --max-frames): each video gets its own frame count.
    max_frames: the most frames of the fps rule; longer videos get this many, evenly spread.
    tokens_per_frame: feature rows per frame, a square: 1 = the pooled embedding (VTimeLLM), k² = the patch grid
        average-pooled to k × k (rows frame by frame).
    """

    model: str = "ViT-L-14"
    weights: str | None = None
    pretrained: str | None = None
    fast_resize: bool = False
    device: str = "auto"
    seed: int = 0
    encoder: str | None = None
    frames: int = NUM_FRAMES
    fps: float | None = None
    max_frames: int | None = None
    tokens_per_frame: int = 1

    def __post_init__(self) -> None:
        if self.encoder is not None:
            if self.model not in ("ViT-L-14", self.encoder):
                raise ValueError("give the encoder once: --encoder or --clip-model, not both")
            object.__setattr__(self, "model", self.encoder)
        if self.weights and self.pretrained:
            raise ValueError("give either --clip-weights or --clip-pretrained, not both")
        if self.family == "hf" and (self.weights or self.pretrained):
            raise ValueError(f"{self.model} is a Hugging Face folder: its weights are in it (no --clip-weights)")
        if self.family == "open_clip" and self.model not in TINY_NAMES and not (self.weights or self.pretrained):
            raise ValueError(f"{self.model} needs weights: --clip-weights PATH (e.g. ViT-L-14.pt) or --clip-pretrained "
                             "TAG, or a local Hugging Face folder (or use --clip-model tiny-random for a test run)")
        self._check_sampling()
        if self.weights is not None and not Path(self.weights).is_file():
            raise ValueError(f"--clip-weights {self.weights}: no such file")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def _check_sampling(self) -> None:
        if self.frames < 1:
            raise ValueError(f"--frames must be ≥ 1, got {self.frames}")
        if (self.fps is None) != (self.max_frames is None):
            raise ValueError("the fps rule needs both --fps F and --max-frames M")
        if self.fps is not None and (not self.fps > 0 or self.max_frames < 1 or self.frames != NUM_FRAMES):
            raise ValueError(f"--fps must be > 0 and --max-frames ≥ 1, without --frames (got fps {self.fps}, "
                             f"max frames {self.max_frames}, frames {self.frames})")
        k = self.tokens_per_frame
        if k < 1 or math.isqrt(k) ** 2 != k:
            raise ValueError(f"--tokens-per-frame must be a square (1, 4, 9, 16 …), got {k}")

    @property
    def family(self) -> str:
        """`open_clip` or `hf` (pipeline/extract/encoders.py)."""
        return encoders.family(self.model)

    @property
    def sampling(self) -> dict:
        """The frame rule's arguments for pipeline.contract.timing.sample_indices."""
        return {"frames": self.frames, "rate": self.fps, "max_frames": self.max_frames}

    @property
    def pixel_spec(self) -> PixelSpec:
        """The encoder's input pixels; VTimeLLM's for the two models it has always run (read from no config)."""
        if self.model in ("ViT-L-14", TINY_RANDOM):
            return DEFAULT_PIXELS
        return encoders.pixels(self.model, self.pretrained)

    def to_json(self) -> dict:
        return asdict(self)


CLIP_OPTIONS = Group(ClipConfig, {"model": "clip_model", "weights": "clip_weights", "pretrained": "clip_pretrained"})
"""`--clip-model/--clip-weights/--clip-pretrained`, shared by `vtl-pipeline extract` and `vtl-chat`."""


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device cuda requested but torch sees no CUDA GPU")
    return device


HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def weights_file(cfg: ClipConfig) -> str | None:
    """The file holding the weights: --clip-weights, or a Hugging Face folder's weights file."""
    if cfg.family == "hf":
        return next((str(p) for n in HF_WEIGHTS if (p := Path(cfg.model) / n).is_file()), None)
    return cfg.weights


@functools.lru_cache(maxsize=8)
def _weights_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a weights file, once per file version: the encoder id and the feature spec both name it (a ViT-L/14
    file is ~0.9 GB, seconds to hash)."""
    from manifests.schema import file_sha256

    return file_sha256(path)


def weights_id(cfg: ClipConfig, digits: int = 16) -> str:
    """`sha256:…` of the weights file (the first `digits` hex digits), `pretrained:TAG`, or `random-seedS`."""
    path = weights_file(cfg)
    if path:
        st = os.stat(path)
        return "sha256:" + _weights_digest(os.path.abspath(path), st.st_size, st.st_mtime_ns)[:digits]
    if cfg.pretrained:
        return f"pretrained:{cfg.pretrained}"
    return f"random-seed{cfg.seed}"


def encoder_id(cfg: ClipConfig) -> str:
    """Model + weights + preprocessing, e.g. `open_clip:ViT-L-14|sha256:0123…|tv-bicubic-short224-noaa_…`; other
    pixels, frame rules and tokens per frame add their own parts (the default's id is what it always was)."""
    pre = PREPROCESS_FAST if cfg.fast_resize else PREPROCESS_DEFAULT
    parts = [f"{cfg.family}:{cfg.model}", weights_id(cfg), pre]
    pixels = cfg.pixel_spec
    if pixels != DEFAULT_PIXELS:
        parts.append(f"{pixels.resize}{pixels.size}-mean{','.join(f'{m:g}' for m in pixels.mean)}")
    if cfg.fps is not None:
        parts.append(f"fps{cfg.fps:g}-max{cfg.max_frames}")
    elif cfg.frames != NUM_FRAMES:
        parts.append(f"frames{cfg.frames}")
    if cfg.tokens_per_frame != 1:
        parts.append(f"tokens{cfg.tokens_per_frame}")
    return "|".join(parts)


def load_model(cfg: ClipConfig):
    """Build the model on its device, in eval mode: fp16 on GPU, float32 on CPU. Raises ModelLoadError."""
    import torch

    device = resolve_device(cfg.device)
    if cfg.pretrained and not cfg.weights and cfg.model != TINY_RANDOM:
        require_pretrained(cfg.model, cfg.pretrained)
    try:
        if cfg.family == "hf":
            from pipeline.extract.towers import load_hf

            model = load_hf(cfg.model)
        elif cfg.weights:
            model = image_tower(load_weights_file(cfg.weights, cfg.model))
        elif cfg.model in TINY_NAMES:
            model = image_tower(tiny_clip(cfg.seed, cfg.model))
        else:
            model = image_tower(open_clip_model(cfg.model, cfg.pretrained))
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"cannot load encoder {cfg.model} ({weights_id(cfg)}): {type(e).__name__}: {e}") from e
    return model.to(device=device, dtype=torch.float16 if device == "cuda" else torch.float32).eval()


def output_width(cfg: ClipConfig) -> int:
    """Feature width D of the configured encoder (the pooled embedding's; patch tokens share it)."""
    return FEATURE_DIM if cfg.model in ("ViT-L-14", TINY_RANDOM) else encoders.vision_shape(cfg.model).out_dim


def cpu_memory_bytes(cfg: ClipConfig, batch_size: int) -> int:
    """Host memory of one float32 copy of the image encoder while it encodes `batch_size` frames: its weights, the
    float32 input and one forward pass's activations. Measured on ViT-L/14 on CPU (random weights, batch 8/32/64):
    1.22 GB of weights plus 12.9-13.3 MB a frame, which is 3 float32 MLP widths per token plus the input; the
    estimate gives 1.22 GB + 13.2 MB a frame (4.6 GB at batch 256). It is what a CPU encoder asks Ray for (its
    `memory` resource), so a node never runs more copies than its memory holds. Every encoder: its shape from its
    own configuration (pipeline/extract/encoders.py), the MLP width in place of 4 × width."""
    v = encoders.vision_shape(cfg.model)
    per_frame = v.tokens * 3 * v.mlp + 3 * v.image_size ** 2
    return 4 * (encoders.estimate_params(v) + batch_size * per_frame)


def frame_chunks(arrays: list[np.ndarray], size: int):
    """Consecutive chunks of `size` frames across `arrays` (the last may be shorter): a chunk inside one array is a
    view of it, only a chunk spanning arrays is copied. The same chunks as slicing their concatenation, without the
    copy of a whole batch."""
    parts, have = [], 0
    for a in arrays:
        start = 0
        while start < len(a):
            take = min(size - have, len(a) - start)
            parts.append(a[start:start + take])
            have, start = have + take, start + take
            if have == size:
                yield parts[0] if len(parts) == 1 else np.concatenate(parts)
                parts, have = [], 0
    if parts:
        yield parts[0] if len(parts) == 1 else np.concatenate(parts)


def encode(model, pixels, batch_size: int, tokens_per_frame: int = 1, spec: PixelSpec = DEFAULT_PIXELS) -> np.ndarray:
    """Projected CLS features, in chunks of `batch_size` frames → float16 (N·tokens_per_frame, D). `pixels`:
    preprocessed float pixels (float32, or already in the model's dtype), or uint8 centre crops (the fast path),
    normalised here by `spec`; one array, or a list of them (one per item: chunks then cross items as in their
    concatenation)."""
    import torch

    from pipeline.extract.towers import frame_rows

    arrays = list(pixels) if isinstance(pixels, (list, tuple)) else [pixels]
    param = next(model.parameters())
    for a in arrays:
        if a.dtype not in (np.uint8, np.float32) and torch.as_tensor(a[:0]).dtype != param.dtype:
            raise RuntimeError(f"{a.dtype} pixels for a {param.dtype} encoder: features would differ; "
                               "the decode side must ship float32, the model's dtype or uint8")
    out = []
    with torch.inference_mode():
        for part in frame_chunks(arrays, batch_size):
            chunk = torch.as_tensor(part).to(param.device)
            chunk = (normalise(chunk, spec) if chunk.dtype == torch.uint8 else chunk).to(param.dtype)
            out.append(frame_rows(model, chunk, tokens_per_frame).float().cpu().numpy())
    if not out:
        return np.zeros((0, FEATURE_DIM), dtype=np.float16)
    return np.concatenate(out).astype(np.float16)
