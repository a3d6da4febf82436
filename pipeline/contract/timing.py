"""The two time contracts of DESIGN.md, as pure functions: which frames a sample uses, and how seconds become the
timestamp text (and back): VTimeLLM's two-digit positions (`render_time`, `grounding_span`, ...) and the time formats
`relative` | `seconds` | `frame` (`TimeFormat`, whose defaults give exactly the two-digit text). Everything that
samples frames, renders or parses timestamps calls these; nothing else re-implements them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

NUM_FRAMES = 100
"""Frames per video sample (VTimeLLM, paper §3.1)."""


def frame_indices(num_frames: int, fps: float, window: tuple[float, float] | None = None,
                  n: int = NUM_FRAMES) -> list[int]:
    """VTimeLLM's sampling: `linspace(start, end, n)` truncated to int, first and last frame included.

    Whole file: start 0, end num_frames − 1. A window [w0, w1] (seconds): start = max(int(fps·w0), 0),
    end = min(int(fps·w1), num_frames − 1). Raises ValueError when nothing is left to sample.
    """
    if num_frames <= 0:
        raise ValueError("video has no frames")
    if window is None:
        start, end = 0, num_frames - 1
    else:
        if not fps > 0:
            raise ValueError(f"cannot place a window without a frame rate (fps={fps})")
        start = max(int(fps * window[0]), 0)
        end = min(int(fps * window[1]), num_frames - 1)
        if start > num_frames - 1:
            raise ValueError(f"window {window} starts after the last frame ({num_frames} frames at {fps:g} fps)")
        if end < start:
            raise ValueError(f"window {window} is empty at {fps:g} fps")
    if n == 1:
        return [start]
    step = (end - start) / (n - 1)
    # Same values as numpy.linspace(start, end, n).astype(int32); computed exactly in floats like numpy does.
    return [int(start + i * step) if i < n - 1 else int(end) for i in range(n)]


def sample_indices(num_frames: int, fps: float, window: tuple[float, float] | None = None, *,
                   frames: int = NUM_FRAMES, rate: float | None = None, max_frames: int | None = None) -> list[int]:
    """The frames of one sample under the feature spec's sampling rule.

    `uniform` (rate None): `frame_indices(…, n=frames)`, VTimeLLM's rule for frames = 100. `fps` (rate F frames a
    second, at most `max_frames` M): the span [start, end] of `frame_indices` lasts (end − start + 1) / fps seconds
    and gets n = max(1, floor(seconds · F)) frames, frame k at start + int(k · fps / F) (the frame shown at
    k / F seconds into the span); when n > M, M frames spread evenly with `frame_indices`' linspace rule."""
    if rate is None:
        return frame_indices(num_frames, fps, window, frames)
    if not rate > 0 or not (max_frames and max_frames >= 1):
        raise ValueError(f"the fps rule needs a rate > 0 and max_frames ≥ 1 (got {rate}, {max_frames})")
    if not fps > 0:
        raise ValueError(f"the fps rule needs the video's frame rate (fps={fps})")
    bounds = frame_indices(num_frames, fps, window, 2)
    start, end = bounds[0], bounds[-1]
    n = max(1, math.floor((end - start + 1) / fps * rate))
    if n > max_frames:
        return frame_indices(num_frames, fps, window, max_frames)
    return [min(start + int(k * fps / rate), end) for k in range(n)]


def frame_times(indices: list[int], fps: float) -> list[float]:
    """Seconds (from the start of the file) at which the given frames are shown."""
    return [i / fps for i in indices] if fps > 0 else [0.0 for _ in indices]


def quantize(seconds: float, duration: float) -> int:
    """`min(round(t / D · 100), 99)` (Python's round: half to even), floored at 0 for times before the window.

    The floor is vtl's (issue 13 item 7, decided): VTimeLLM has none, so −1.6 s of 54.2 s renders "-3" there, a string
    its own eval regex (two digits) cannot read back; vtl renders "00". vtl-built data never has such times (events are
    clipped to the window and noted); only an imported record with a negative `meta.token` time would differ."""
    if not duration > 0:
        raise ValueError(f"duration must be positive, got {duration}")
    return max(0, min(round(seconds / duration * 100), 99))


def render(q: int) -> str:
    """A quantised position as the two-digit token VTimeLLM trains on: 7 → "07"."""
    if not 0 <= q <= 99:
        raise ValueError(f"timestamp position {q} outside 0..99")
    return f"{q:02d}"


def render_time(seconds: float, duration: float) -> str:
    return render(quantize(seconds, duration))


def grounding_span(a: int, b: int, duration: float) -> tuple[float, float]:
    """Grounding answer "aa to bb" → seconds: (a/100·D, b/100·D) (VTimeLLM eval; no +1 on the end)."""
    return a / 100 * duration, b / 100 * duration


def dense_caption_span(a: int, b: int, duration: float) -> tuple[float, float]:
    """Dense-captioning answer "from aa to bb" → seconds: (a·D/100, (b+1)·D/100) (VTimeLLM eval rule, in its order of
    float operations so the seconds are bit-equal to its scorer's)."""
    return a * duration / 100, (b + 1) * duration / 100


DURATION_TOLERANCE_S = 0.5
DURATION_TOLERANCE_REL = 0.05
"""A sample's annotated duration may differ from the decoded length of its media by max(0.5 s, 5 % of the decoded
length) before it is flagged: decoders' frame counts and containers' durations differ by a frame or two, and
annotations round durations to a tenth or a second."""


def decoded_span(num_frames: int, fps: float, window: tuple[float, float] | None) -> float | None:
    """Seconds of media behind a sample: the file's num_frames / fps, or the part of the window inside the file."""
    if not (num_frames > 0 and fps and fps > 0):
        return None
    length = num_frames / fps
    if window is None:
        return length
    return max(0.0, min(float(window[1]), length) - max(float(window[0]), 0.0))


def duration_mismatch(annotated: float | None, decoded: float | None) -> dict | None:
    """`{"annotated", "decoded"}` (seconds) when the two disagree beyond the tolerance above, else None.

    The annotated duration stays the time base of the sample's timestamps either way (VTimeLLM quantises against the
    annotation's duration, `quantize`); the flag says that the frames behind them cover another length."""
    if not (is_finite(annotated) and is_finite(decoded)):
        return None
    if abs(annotated - decoded) <= max(DURATION_TOLERANCE_S, DURATION_TOLERANCE_REL * decoded):
        return None
    return {"annotated": round(float(annotated), 3), "decoded": round(float(decoded), 3)}


def is_finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


TIME_FORMATS = ("relative", "seconds", "frame")
"""How a time is written in text: `relative` (VTimeLLM: the position 0…N−1 of the time in the video's length, N the
number of positions, zero-padded to the digits N−1 needs: "00"–"99" for N = 100), `seconds` ("12.5s", with
`precision` decimals) or `frame` (the index 0…N−1 of the nearest of N uniformly sampled frames, no padding)."""


@dataclass(frozen=True)
class TimeFormat:
    """One time format, bound to the N positions (relative) or sampled frames (frame) of a sample.

    build-qa renders with it, the eval parser reads with `pattern` and the scorer converts back with `grounding_span`
    / `dense_span`; with the defaults (relative, N = 100) every result equals the two-digit functions above."""

    kind: str = "relative"
    precision: int = 1
    """`seconds`: decimals written ("12.5s" at 1)."""
    frames: int = NUM_FRAMES
    """`relative`: positions N; `frame`: sampled frames N."""

    def __post_init__(self) -> None:
        if self.kind not in TIME_FORMATS:
            raise ValueError(f"time format must be one of {', '.join(TIME_FORMATS)}, got {self.kind!r}")
        if not 0 <= self.precision <= 6:
            raise ValueError(f"seconds precision must be in 0..6, got {self.precision}")
        if self.frames < 1:
            raise ValueError(f"a time format needs at least one position, got {self.frames}")

    @property
    def digits(self) -> int:
        """`relative`: the digits N−1 needs (2 for N = 100)."""
        return len(str(self.frames - 1))

    def position(self, seconds: float, duration: float) -> int:
        """`relative`: `min(round(t / D · N), N − 1)`, floored at 0 (= `quantize` for N = 100); `frame`: the index of
        the nearest of N frames spread evenly from 0 to D, `round(t / D · (N − 1))` clamped to 0…N−1."""
        if not duration > 0:
            raise ValueError(f"duration must be positive, got {duration}")
        if self.kind == "relative":
            return max(0, min(round(seconds / duration * self.frames), self.frames - 1))
        return max(0, min(round(seconds / duration * (self.frames - 1)), self.frames - 1))

    def render(self, seconds: float, duration: float) -> str:
        """A time (seconds from the start of the sample) as text: "07", "12.5s" or "42"."""
        if self.kind == "seconds":
            if not duration > 0:
                raise ValueError(f"duration must be positive, got {duration}")
            return f"{max(0.0, min(float(seconds), duration)):.{self.precision}f}s"
        q = self.position(seconds, duration)
        return f"{q:0{self.digits}d}" if self.kind == "relative" else str(q)

    @property
    def pattern(self) -> str:
        """A regex for one rendered time with one group, the number (`\\d{2}` for the default, as VTimeLLM's eval)."""
        if self.kind == "relative":
            return rf"(\d{{{self.digits}}})"
        if self.kind == "seconds":
            return r"(\d+(?:\.\d+)?)s"
        return r"(\d+)"

    @property
    def example(self) -> str:
        """How a time looks in a layout shown to the model ("xx" for the default, VTimeLLM's dense query)."""
        if self.kind == "relative":
            return "x" * self.digits
        return "x" * 2 + ("." + "x" * self.precision if self.precision else "") + "s" if self.kind == "seconds" \
            else "n"

    def seconds(self, number: str | int | float, duration: float) -> float:
        """One parsed number (a `pattern` group) → seconds, without VTimeLLM's dense-caption end rule."""
        if self.kind == "relative":
            return int(number) / self.frames * duration
        if self.kind == "seconds":
            return float(number)
        return int(number) * duration / (self.frames - 1) if self.frames > 1 else 0.0

    def grounding_span(self, a, b, duration: float) -> tuple[float, float]:
        """A grounding answer's two numbers → seconds (relative: `a/N·D`, `b/N·D`, no +1: `grounding_span`)."""
        return self.seconds(a, duration), self.seconds(b, duration)

    def dense_span(self, a, b, duration: float) -> tuple[float, float]:
        """A dense-caption event's two numbers → seconds; relative keeps VTimeLLM's +1 on the end and its order of
        float operations (`dense_caption_span`), the other formats name instants and take none."""
        if self.kind == "relative":
            return int(a) * duration / self.frames, (int(b) + 1) * duration / self.frames
        return self.grounding_span(a, b, duration)

    def fraction(self, number, duration: float) -> float:
        """A parsed number as a fraction of the duration (relative: `a / N`, VTimeLLM's IoU of fractions)."""
        if self.kind == "relative":
            return int(number) / self.frames
        return self.seconds(number, duration) / duration

    def resolution(self, duration: float) -> float:
        """The largest distance (seconds) between a time in 0…D and its rendering read back (round trip bound)."""
        if self.kind == "relative":
            return duration / self.frames
        if self.kind == "seconds":
            return 0.5 * 10 ** -self.precision
        return duration / (2 * (self.frames - 1)) if self.frames > 1 else duration

    def to_json(self) -> dict:
        if self.kind == "seconds":
            return {"kind": self.kind, "precision": self.precision}
        return {"kind": self.kind, "positions": self.frames} if self.kind == "relative" else {"kind": self.kind}


DEFAULT_TIME_FORMAT = TimeFormat()
