"""Synthetic media with known content, for tests, benchmarks and the CPU demo.

`write_video` encodes frames with PyAV (H.264 by default), which every decoder we support reads.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def write_video(path: str | Path, frames: np.ndarray, fps: float, codec: str = "libx264") -> Path:
    """Encode `frames` (T, H, W, 3) uint8 RGB at `fps` frames per second; H and W must be even for yuv420p."""
    import av

    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_counter_video(path: str | Path, num_frames: int, fps: float, size: tuple[int, int] = (64, 48)) -> Path:
    """A video whose frame i is a flat grey of level (i·7) mod 256 in the left half and a colour bar on the right:
    different frames look different, so tests can tell which frame a decoder returned."""
    w, h = size
    frames = np.zeros((num_frames, h, w, 3), dtype=np.uint8)
    for i in range(num_frames):
        frames[i, :, : w // 2] = (i * 7) % 256
        frames[i, :, w // 2:] = ((i * 3) % 256, (255 - i) % 256, (i * 11) % 256)
    return write_video(path, frames, fps)
