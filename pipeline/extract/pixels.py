"""Frames → the encoder's input, DESIGN.md's "Pixels → features" path in torch alone: RGB uint8 → /255 →
torchvision-equal resize of the short side to 224 (bicubic, antialias=False) → centre crop 224 → CLIP mean/std.
`--fast-resize` skips the resize here (the decoder did it) and ships uint8 crops that `normalise` finishes on the
encoder's side. torch is imported inside functions so that importing this module stays cheap.

Other encoders change the numbers, not the path (`PixelSpec`: the input size, mean/std, and `short_side` resize +
centre crop or `squash` to a square); the resize stays torch's bicubic without antialias, VTimeLLM's. The default
spec runs exactly the ops it always ran (tests/pipeline/extract/test_reference_features.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 224
RESIZE_MODES = ("short_side", "squash")


@dataclass(frozen=True)
class PixelSpec:
    """What an encoder takes: `size`² RGB pixels, normalised by `mean`/`std`; `short_side`: short side resized to
    `size` then centre-cropped (CLIP); `squash`: the whole frame resized to size × size (SigLIP)."""

    size: int = IMAGE_SIZE
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resize: str = "short_side"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")

    def decoder_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) the decoder resizes to on the fast path; the encoder side then only crops."""
        return short_side_size(height, width, self.size) if self.resize == "short_side" else (self.size, self.size)

    def to_json(self) -> dict:
        """The preprocessing as the feature spec records it."""
        short = self.resize == "short_side"
        return {"resize": f"{self.resize}:{self.size}", "crop": f"center:{self.size}" if short else None,
                "mean": list(self.mean), "std": list(self.std), "interpolation": "bicubic", "antialias": False}


DEFAULT_PIXELS = PixelSpec()


def short_side_size(height: int, width: int, size: int = IMAGE_SIZE) -> tuple[int, int]:
    """(h, w) after resizing the short side to `size`, with torchvision's rounding (long side truncated)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def preprocess(frames: np.ndarray, resize: bool = True, chunk: int = 2, dtype=None, spec: PixelSpec = DEFAULT_PIXELS):
    """uint8 (N, H, W, 3) RGB → float32 (N, 3, 224, 224), DESIGN.md's path. `resize=False` when the decoder already
    brought the short side to 224 (fast_resize). `dtype` (a torch dtype) casts the result, e.g. to the float16 a GPU
    encoder feeds its model anyway (`encode` would cast on the device with the same round-to-nearest-even).

    Every op works frame by frame, so running it on chunks of `chunk` contiguous NCHW frames gives bit-identical
    output (tests/test_clip.py) while keeping the float copy of full-resolution frames small enough for the caches.
    """
    import torch

    out = torch.empty((len(frames), 3, spec.size, spec.size), dtype=dtype or torch.float32)
    for i in range(0, len(frames), chunk):
        out[i:i + chunk] = _preprocess_chunk(frames[i:i + chunk], resize, spec)
    return out


def _nchw(frames: np.ndarray):
    import torch

    return torch.from_numpy(np.require(frames, requirements=("C", "W"))).permute(0, 3, 1, 2).contiguous()


def center_crop_uint8(frames: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decoder-resized uint8 (N, H, W, 3) frames (short side 224) → uint8 (N, 3, 224, 224): what the fast path ships
    to the encoder, 4× fewer bytes than float32 pixels; `normalise` there gives the same pixels as `preprocess`."""
    return _center_crop(_nchw(frames), size).numpy()


# The default path in torch alone, op for op what torchvision's functional resize / center_crop / normalize run on
# a float tensor (tests/pipeline/extract/test_clip.py checks equality against torchvision itself). Decode workers
# then never import torchvision: 1.6 CPU s and ~170 MB less per worker (docs/extract.md, memory).

def _resize_short_side(x, spec: PixelSpec = DEFAULT_PIXELS):
    """torchvision `resize(x, [224], BICUBIC, antialias=False)`: same output size, same interpolate call (`squash`:
    `resize(x, [size, size], …)`)."""
    import torch

    h, w = x.shape[-2:]
    size = spec.decoder_size(h, w)
    if (h, w) == size:
        return x
    return torch.nn.functional.interpolate(x, size=list(size), mode="bicubic", align_corners=False, antialias=False)


def _center_crop(x, size: int = IMAGE_SIZE):
    """torchvision `center_crop(x, [224, 224])` for frames at least 224 on each side (offsets rounded half to even)."""
    h, w = x.shape[-2:]
    if h < size or w < size:  # torchvision pads first; never the case after the short-side resize
        from torchvision.transforms import functional as TF

        return TF.center_crop(x, [size, size])
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def _normalize(x, spec: PixelSpec = DEFAULT_PIXELS):
    """torchvision `normalize(x, CLIP_MEAN, CLIP_STD)`: a copy, minus the mean, divided by the std, in x's dtype."""
    import torch

    mean = torch.as_tensor(spec.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(spec.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x.clone().sub_(mean).div_(std)


def normalise(x, spec: PixelSpec = DEFAULT_PIXELS):
    """uint8 NCHW tensor → /255 → the spec's mean/std, float32 (element-wise ops: the same on any device)."""
    return _normalize(x.float().div_(255.0), spec)


def _nchw_float(frames: np.ndarray):
    """uint8 NHWC → float32 NCHW / 255 in one strided copy plus an in-place divide (the same values as
    `.contiguous().float().div_(255)`, which makes two full-resolution copies: ~45 % of the conversion's CPU)."""
    import torch

    x = torch.from_numpy(np.require(frames, requirements=("C", "W"))).permute(0, 3, 1, 2)
    return x.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def _preprocess_chunk(frames: np.ndarray, resize: bool, spec: PixelSpec):
    if not resize:  # cropping uint8 then converting equals converting then cropping: a crop only selects pixels
        return normalise(_center_crop(_nchw(frames), spec.size), spec)
    return _normalize(_center_crop(_resize_short_side(_nchw_float(frames), spec), spec.size), spec)
