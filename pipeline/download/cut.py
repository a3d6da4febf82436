"""Probe, cut and re-encode a downloaded video with PyAV (the FFmpeg libraries it bundles; no ffmpeg binary needed).

A cut is frame-accurate: frames are decoded and re-encoded (H.264, yuv420p), so a window starts on its first frame,
not on the keyframe before it. Output frame k shows the source frame on screen at `start + k / fps` (the last
frame whose timestamp is ≤ that time), so a changed frame rate repeats or drops frames evenly. Audio is dropped:
the pipeline reads frames only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from pipeline.download.sources import NOT_A_VIDEO, FetchError


@dataclass(frozen=True)
class VideoInfo:
    duration: float
    fps: float
    width: int
    height: int


def probe(path: str) -> VideoInfo:
    """The video's duration, frame rate and size; `not_a_video` when it has no decodable video stream."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise FetchError(NOT_A_VIDEO, "no video stream")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise FetchError(NOT_A_VIDEO, "no decodable frame")
            rate = stream.average_rate or stream.guessed_rate or 25
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            else:
                duration = math.nan
            return VideoInfo(duration, float(rate), first.width, first.height)
    except av.error.FFmpegError as exc:
        raise FetchError(NOT_A_VIDEO, f"{type(exc).__name__}: {exc}") from None


def out_size(width: int, height: int, target: int | None) -> tuple[int, int]:
    """(width, height) scaled to `target` rows, keeping the aspect ratio; both even (yuv420p needs it)."""
    if target is None:
        return width - width % 2, height - height % 2
    w = max(2, round(width * target / height / 2) * 2)
    return w, target


def write_clip(src: str, dst: str, start: float, end: float, info: VideoInfo, height: int | None = None,
               fps: float | None = None) -> int:
    """Write [start, end) seconds of `src` to `dst` (mp4), at `fps` (default: the source's) and `height`; returns
    the number of frames written."""
    import av

    rate = Fraction(fps if fps is not None else info.fps).limit_denominator(1001)
    width, rows = out_size(info.width, info.height, height)
    written = 0
    with av.open(src) as inp, av.open(dst, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, rows, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        prev, last_t = None, None

        def emit_until(limit: float) -> None:  # every output time < limit shows `prev`
            nonlocal written
            while prev is not None and start + written / rate < min(limit, end) - 1e-9:
                frame = prev.reformat(width=width, height=rows, format="yuv420p")
                frame.pts, frame.time_base = written, 1 / rate
                out.mux(stream.encode(frame))
                written += 1

        for frame in inp.decode(video=0):
            t = frame.time if frame.time is not None else (last_t or 0.0) + 1 / info.fps
            emit_until(t)
            if t >= end:
                break
            prev, last_t = frame, t
        else:
            emit_until((last_t or 0.0) + 1 / info.fps)  # the last frame stays on screen one source frame
        out.mux(stream.encode(None))
    return written
