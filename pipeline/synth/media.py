"""Synthetic media with known content, for tests, benchmarks and the CPU demo.

`write_video` encodes frames with PyAV (H.264 by default), which every decoder we support reads. The second half
draws grounding videos: coloured shapes and scene colours on screen over known spans, with one caption per event;
`pipeline.synth.dataset` turns them into a dataset (`vtl-pipeline synth`).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_video(path: str | Path, frames, fps: float, codec: str = "libx264", gop: int | None = None) -> Path:
    """Encode `frames` (T, H, W, 3) uint8 RGB (an array, or an iterable of (H, W, 3) frames for long clips) at `fps`
    frames per second; H and W must be even for yuv420p. `gop`: a keyframe exactly every `gop` frames (libx264)."""
    import av

    if isinstance(frames, (np.ndarray, list)):
        frames = np.asarray(frames, dtype=np.uint8)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    frames = iter(frames)
    first = np.asarray(next(frames), dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = first.shape[1], first.shape[0]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "18"}
            if gop:  # fixed GOP: no scene-cut keyframes, none closer than `gop`
                stream.options = {**stream.options, "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        for frame in itertools.chain([first], frames):
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


# --- synthetic grounding videos: coloured events on a grey background ----------------------------------------------
# Events are large and saturated so that even a tiny random CLIP gives clearly different features inside and outside
# them; the caption names the colour and the shape, so grounding needs both.

BACKGROUND = (48, 48, 48)
"""Dark grey shown whenever no event is on screen."""
COLOURS = {"red": (230, 30, 30), "green": (30, 200, 60), "blue": (40, 70, 230), "yellow": (240, 220, 30),
           "magenta": (220, 40, 220), "cyan": (40, 220, 230), "white": (245, 245, 245), "orange": (245, 140, 20)}
SHAPES = ("scene", "square", "ball", "stripes")
EVENT_CAPTIONS = {"scene": "The background turns {c}.", "square": "{A} {c} square appears.",
                  "ball": "{A} {c} ball moves from left to right.", "stripes": "{C} stripes appear."}
IMAGE_CAPTIONS = {"scene": "{a} {c} background", "square": "{a} {c} square on a grey background",
                  "ball": "{a} {c} ball on a grey background", "stripes": "{c} stripes on a grey background"}


def caption_of(template: str, colour: str) -> str:
    """Fill a caption template: {c} colour, {C} capitalised colour, {a}/{A} the article that goes before it."""
    a = "an" if colour[0] in "aeiou" else "a"
    return template.format(c=colour, C=colour.capitalize(), a=a, A=a.capitalize())


@dataclass(frozen=True)
class SynthEvent:
    """One event: `shape` in `colour` on screen for start ≤ t < end (seconds)."""

    start: float
    end: float
    shape: str
    colour: str

    @property
    def caption(self) -> str:
        return caption_of(EVENT_CAPTIONS[self.shape], self.colour)

    def frame_range(self, fps: float) -> range:
        """Frames i whose time i/fps lies in [start, end); the 1e-9 keeps a boundary that falls on a frame exact."""
        return range(math.ceil(self.start * fps - 1e-9), math.ceil(self.end * fps - 1e-9))


def paint(frame: np.ndarray, shape: str, colour: str, progress: float = 0.5) -> None:
    """Draw one event into `frame` (H, W, 3) in place; `progress` in [0, 1] moves the ball from left to right."""
    h, w = frame.shape[:2]
    rgb = COLOURS[colour]
    if shape == "scene":
        frame[:] = rgb
    elif shape == "square":
        side = int(0.75 * min(h, w))
        y0, x0 = (h - side) // 2, (w - side) // 2
        frame[y0:y0 + side, x0:x0 + side] = rgb
    elif shape == "ball":
        r = 0.35 * min(h, w)
        cx = r + progress * (w - 2 * r)
        yy, xx = np.ogrid[:h, :w]
        frame[(yy + 0.5 - h / 2) ** 2 + (xx + 0.5 - cx) ** 2 <= r * r] = rgb
    elif shape == "stripes":
        band = max(h // 8, 1)
        frame[(np.arange(h) // band) % 2 == 0] = rgb
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def render_events(events: list[SynthEvent], num_frames: int, fps: float, size: int) -> np.ndarray:
    """All frames of one video: background, with each event painted over the frames it covers."""
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    frames[:] = BACKGROUND
    for ev in events:
        span = [i for i in ev.frame_range(fps) if 0 <= i < num_frames]
        for k, i in enumerate(span):
            paint(frames[i], ev.shape, ev.colour, k / max(len(span) - 1, 1))
    return frames


def layout_events(rng: np.random.Generator, duration: float, count: int,
                  gap_scale: float = 1.0) -> list[tuple[float, float]]:
    """`count` non-overlapping spans (seconds, 0.1 s grid) inside [0, duration], separated by gaps ≥ 0.5 s.

    Lengths are drawn as weights: events 1.0–3.0, inner gaps 0.4–1.0, the two outer gaps 0.0–0.8 (gap weights
    multiplied by `gap_scale`), scaled to fill the video; a draw whose inner gaps round below 0.5 s is drawn again.
    """
    for _ in range(100):
        ev = rng.uniform(1.0, 3.0, count)
        gaps = gap_scale * np.concatenate([rng.uniform(0.0, 0.8, 1), rng.uniform(0.4, 1.0, count - 1),
                                           rng.uniform(0.0, 0.8, 1)])
        parts = np.empty(2 * count + 1)
        parts[0::2], parts[1::2] = gaps, ev
        edges = np.round(np.cumsum(parts) / parts.sum() * duration, 1)
        spans = [(float(edges[2 * i]), float(min(edges[2 * i + 1], duration))) for i in range(count)]
        if all(b[0] - a[1] >= 0.5 - 1e-9 for a, b in zip(spans, spans[1:])) and all(s < e for s, e in spans):
            return spans
    raise ValueError(f"cannot place {count} events with gaps in {duration:.1f} s")


def random_video(rng: np.random.Generator, min_duration: float, max_duration: float,
                 fps_choices: tuple[float, ...], gap_scale: float = 1.0,
                 events: tuple[int, int] | None = None) -> tuple[float, int, list[SynthEvent]]:
    """(fps, num_frames, events) of one video, distinct colours. Event count: `events` = (least, most) drawn
    uniformly; by default 2–4 (2 in videos shorter than 8 s)."""
    fps = float(rng.choice(fps_choices))
    num_frames = max(int(round(rng.uniform(min_duration, max_duration) * fps)), 2)
    duration = num_frames / fps
    if events is None:
        count = int(rng.integers(2, 5)) if duration >= 8 else 2
    else:
        count = int(rng.integers(events[0], events[1] + 1))
    colours = rng.choice(list(COLOURS), count, replace=False)
    shapes = rng.choice(SHAPES, count)
    spans = layout_events(rng, duration, count, gap_scale)
    return fps, num_frames, [SynthEvent(s, e, str(sh), str(c)) for (s, e), sh, c in zip(spans, shapes, colours)]
