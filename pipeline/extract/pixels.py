"""Frames → the encoder's input, DESIGN.md's "Pixels → features" path in torch alone: RGB uint8 → /255 →
torchvision-equal resize of the short side to 224 (bicubic, antialias=False) → centre crop 224 → CLIP mean/std.
`--fast-resize` skips the resize here (the decoder did it) and ships uint8 crops that `normalise` finishes on the
encoder's side. torch is imported inside functions so that importing this module stays cheap.
"""
from __future__ import annotations

import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 224


def short_side_size(height: int, width: int, size: int = IMAGE_SIZE) -> tuple[int, int]:
    """(h, w) after resizing the short side to `size`, with torchvision's rounding (long side truncated)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def preprocess(frames: np.ndarray, resize: bool = True, chunk: int = 2, dtype=None):
    """uint8 (N, H, W, 3) RGB → float32 (N, 3, 224, 224), DESIGN.md's path. `resize=False` when the decoder already
    brought the short side to 224 (fast_resize). `dtype` (a torch dtype) casts the result, e.g. to the float16 a GPU
    encoder feeds its model anyway (`encode` would cast on the device with the same round-to-nearest-even).

    Every op works frame by frame, so running it on chunks of `chunk` contiguous NCHW frames gives bit-identical
    output (tests/test_clip.py) while keeping the float copy of full-resolution frames small enough for the caches.
    """
    import torch

    out = torch.empty((len(frames), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=dtype or torch.float32)
    for i in range(0, len(frames), chunk):
        out[i:i + chunk] = _preprocess_chunk(frames[i:i + chunk], resize)
    return out


def _nchw(frames: np.ndarray):
    import torch

    return torch.from_numpy(np.require(frames, requirements=("C", "W"))).permute(0, 3, 1, 2).contiguous()


def center_crop_uint8(frames: np.ndarray) -> np.ndarray:
    """Decoder-resized uint8 (N, H, W, 3) frames (short side 224) → uint8 (N, 3, 224, 224): what the fast path ships
    to the encoder, 4× fewer bytes than float32 pixels; `normalise` there gives the same pixels as `preprocess`."""
    return _center_crop(_nchw(frames)).numpy()


# The default path in torch alone, op for op what torchvision's functional resize / center_crop / normalize run on
# a float tensor (tests/pipeline/extract/test_clip.py checks equality against torchvision itself). Decode workers
# then never import torchvision: 1.6 CPU s and ~170 MB less per worker (docs/extract.md, memory).

def _resize_short_side(x):
    """torchvision `resize(x, [224], BICUBIC, antialias=False)`: same output size, same interpolate call."""
    import torch

    h, w = x.shape[-2:]
    size = short_side_size(h, w)
    if (h, w) == size:
        return x
    return torch.nn.functional.interpolate(x, size=list(size), mode="bicubic", align_corners=False, antialias=False)


def _center_crop(x):
    """torchvision `center_crop(x, [224, 224])` for frames at least 224 on each side (offsets rounded half to even)."""
    h, w = x.shape[-2:]
    if h < IMAGE_SIZE or w < IMAGE_SIZE:  # torchvision pads first; never the case after the short-side resize
        from torchvision.transforms import functional as TF

        return TF.center_crop(x, [IMAGE_SIZE, IMAGE_SIZE])
    top, left = int(round((h - IMAGE_SIZE) / 2.0)), int(round((w - IMAGE_SIZE) / 2.0))
    return x[..., top:top + IMAGE_SIZE, left:left + IMAGE_SIZE]


def _normalize(x):
    """torchvision `normalize(x, CLIP_MEAN, CLIP_STD)`: a copy, minus the mean, divided by the std, in x's dtype."""
    import torch

    mean = torch.as_tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x.clone().sub_(mean).div_(std)


def normalise(x):
    """uint8 NCHW tensor → /255 → CLIP mean/std, float32 (element-wise ops: the same on any device)."""
    return _normalize(x.float().div_(255.0))


def _nchw_float(frames: np.ndarray):
    """uint8 NHWC → float32 NCHW / 255 in one strided copy plus an in-place divide (the same values as
    `.contiguous().float().div_(255)`, which makes two full-resolution copies: ~45 % of the conversion's CPU)."""
    import torch

    x = torch.from_numpy(np.require(frames, requirements=("C", "W"))).permute(0, 3, 1, 2)
    return x.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def _preprocess_chunk(frames: np.ndarray, resize: bool):
    if not resize:  # cropping uint8 then converting equals converting then cropping: a crop only selects pixels
        return normalise(_center_crop(_nchw(frames)))
    return _normalize(_center_crop(_resize_short_side(_nchw_float(frames))))
