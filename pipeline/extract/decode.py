"""Reading frames: decord for videos (PyAV only where decord cannot open a file), PIL for images.

A media problem is data, not a crash: every failure here raises `MediaError(reason, detail)`, which the steps turn
into an `ErrorRecord`. Reasons are short snake_case words: missing_file, unreadable, no_frames, window_outside_file,
decode_failed, bad_image, bad_shape, too_many_frames, too_large. decord/av/PIL are imported inside functions
(import-light CLIs).

Work per video is bounded: a frame of more than MAX_PIXELS pixels is decoded downscaled (the decoder resizes it, so
an 8K video's 100 frames never exist at full size), and PyAV, which reads frames in order, counts the frames by
demuxing (no decode) and refuses more than MAX_SEQUENTIAL_FRAMES.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from pipeline.extract.spool import MediaError, MediaSpool  # noqa: F401  (MediaSpool: re-exported for the steps)

MAX_ASPECT_RATIO = 20.0
"""Long side / short side of a frame above which it is refused (`bad_shape`) before it is resized.

The default path resizes the short side to 224 on float32 frames, so a frame's resize output is 224 × 224·ratio: a
1×4000 PNG would become 224 × 896000 (2.4 GB of floats, minutes of bicubic), a 1024×2 video 224 × 114688 per
frame. At 20 (ultra-wide video is ~2.4, panoramas ~4–10) the resize output of a frame is at most 224 × 4480, 12 MB."""


def check_shape(height: int, width: int, what: str) -> None:
    """Refuse frames whose resize output would be absurd (MAX_ASPECT_RATIO) or that have no pixels."""
    if height < 1 or width < 1:
        raise MediaError("bad_shape", f"{what} is {width}x{height} pixels")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise MediaError("bad_shape", f"{what} is {width}x{height} pixels (aspect ratio {ratio:.0f}:1, more than "
                                      f"{MAX_ASPECT_RATIO:g}:1): resizing its short side to 224 would cost "
                                      f"{224 * 224 * ratio * 12 / 1e6:.0f} MB per frame")


MAX_PIXELS = 3840 * 2160
"""Pixels per decoded frame (4K UHD) above which a video is decoded downscaled to this many, aspect ratio kept.

The default path decodes frames at full size, then resizes them: 100 frames of 4K UHD are 2.5 GB of uint8; of an 8K
video 10 GB (13.9 GB peak measured), which a 2.9 MB file can ask for. Videos up to 4K decode exactly as before; a
larger frame gives its 224-pixel short side from a 2160-pixel one instead of a 4320-pixel one."""

MAX_SEQUENTIAL_FRAMES = 54_000
"""Most frames a video read by PyAV may have (30 minutes at 30 fps): PyAV, used where decord cannot open a file
(GIFs, ...), decodes frames in order up to the last one sampled, so its cost grows with the frame count (a 5 MB GIF of
200k frames took 222 s). More is a `too_many_frames` error record."""


def bounded_size(height: int, width: int, max_pixels: int = MAX_PIXELS) -> tuple[int, int] | None:
    """(h, w) with at most `max_pixels` pixels and the same aspect ratio, or None when the frame fits as it is."""
    if max_pixels <= 0 or height * width <= max_pixels:
        return None
    scale = (max_pixels / (height * width)) ** 0.5
    return max(2, int(height * scale) // 2 * 2), max(2, int(width * scale) // 2 * 2)  # even: what scalers like


def probe_video(path: str) -> tuple[int, int, float | None]:
    """(height, width, seconds or None) from the container's header, nothing decoded; `unreadable` if PyAV cannot
    open it. The header can lie: the decoder's own bound (MAX_PIXELS) still holds."""
    check_exists(path)
    try:
        import av

        with av.open(path) as container:
            stream = container.streams.video[0]
            h, w = stream.codec_context.height, stream.codec_context.width
            seconds = None
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration:
                seconds = container.duration / 1_000_000  # AV_TIME_BASE
    except Exception as e:
        raise MediaError("unreadable", f"{type(e).__name__}") from e
    return int(h), int(w), seconds


def check_video_bounds(path: str, max_pixels: int, max_seconds: float | None) -> None:
    """Refuse (`too_large`) a video whose header says its frames or its length exceed the bounds (0/None: no bound).
    A header PyAV cannot read is left to the decoders, whose pixel bound (MAX_PIXELS) still holds."""
    try:
        h, w, seconds = probe_video(path)
    except MediaError as e:
        if e.reason == "unreadable":
            return
        raise
    if max_pixels and h * w > max_pixels:
        raise MediaError("too_large", f"its frames are {w}x{h} pixels, more than the {max_pixels} allowed")
    if max_seconds and seconds is not None and seconds > max_seconds:
        raise MediaError("too_large", f"it lasts {seconds:.0f} s, more than the {max_seconds:g} s allowed")


def check_exists(path: str) -> None:
    if not os.path.isfile(path):
        raise MediaError("missing_file", f"{path} does not exist")


@dataclass
class VideoSource:
    """An opened video: its frame count and rate, the decoder that opened it, and a frame reader."""

    path: str
    num_frames: int
    fps: float
    decoder: str
    height: int = 0
    width: int = 0
    threads: int = 1
    strategy: str | None = None  # decord: "seek" | "sequential" | None (chosen per clip, pipeline/extract/read_plan.py)
    _reader: object = None
    max_pixels: int = MAX_PIXELS

    def frame_shape(self) -> tuple[int, int]:
        """(H, W) of the frames; decord exposes no size without decoding, so ask for it only when needed."""
        if not self.height:
            self.height, self.width = (int(v) for v in self._reader[0].shape[:2])
        return self.height, self.width

    def read(self, indices: list[int], size: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 (len(indices), H, W, 3) RGB. `size` = (h, w) asks the decoder to resize (fast path); without it a frame
        of more than `max_pixels` is decoded downscaled to fit (MAX_PIXELS)."""
        if size is None:
            size = bounded_size(*self.frame_shape(), self.max_pixels)
        try:
            if self.decoder == "decord":
                frames = _decord_read(self, indices, size)
                if frames.ndim != 4 or frames.shape[-1] != 3:  # decord gives 4 channels for some tiny frames
                    frames = _pyav_read(self.path, indices, size)
            else:
                frames = _pyav_read(self.path, indices, size)
        except MediaError:
            raise
        except Exception as e:  # truncated/corrupt streams and failed seeks surface as assorted decoder errors
            raise MediaError("decode_failed", f"{type(e).__name__}: {e}") from e
        if frames.shape[0] != len(indices):
            raise MediaError("decode_failed", f"got {frames.shape[0]} of {len(indices)} frames")
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise MediaError("decode_failed", f"the decoder gave frames of shape {tuple(frames.shape[1:])}, not RGB")
        return frames


def open_video(path: str, threads: int = 1, max_pixels: int = MAX_PIXELS) -> VideoSource:
    """decord first (what VTimeLLM used); PyAV only when decord cannot open the file. Frames of more than
    `max_pixels` pixels are read downscaled (0: no bound)."""
    check_exists(path)
    try:
        import decord

        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
        src = VideoSource(path, len(vr), float(vr.get_avg_fps()), "decord", threads=threads, _reader=vr)
    except Exception as decord_error:
        try:
            src = _pyav_open(path)
        except Exception as e:
            if isinstance(e, MediaError):
                raise
            raise MediaError("unreadable", f"decord: {decord_error}; pyav: {type(e).__name__}: {e}") from e
    src.max_pixels = max_pixels
    if src.num_frames <= 0:
        raise MediaError("no_frames", f"{path} has no decodable frames")
    return src


def _decord_read(src: VideoSource, indices: list[int], size: tuple[int, int] | None) -> np.ndarray:
    import decord

    vr = src._reader
    if size is not None and size != src.frame_shape():
        vr = decord.VideoReader(src.path, ctx=decord.cpu(0), width=size[1], height=size[0], num_threads=src.threads)
    from pipeline.extract import read_plan

    return read_plan.read(vr, list(indices), src.strategy)


def _pyav_open(path: str) -> VideoSource:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 0
        h, w = stream.codec_context.height, stream.codec_context.width
        # Container frame counts are often missing or wrong: count the packets (a video packet is one frame, the
        # empty one at the end flushes the decoder), which reads the file once and decodes nothing.
        n = 0
        for packet in container.demux(stream):
            n += packet.size > 0
            if n > MAX_SEQUENTIAL_FRAMES:
                raise MediaError("too_many_frames", f"more than {MAX_SEQUENTIAL_FRAMES} frames, which PyAV would "
                                                    "decode in order (MAX_SEQUENTIAL_FRAMES)")
    return VideoSource(path, n, float(rate), "pyav", h, w)


def _pyav_read(path: str, indices: list[int], size: tuple[int, int] | None) -> np.ndarray:
    import av

    wanted: dict[int, list[int]] = {}
    for pos, idx in enumerate(indices):
        wanted.setdefault(idx, []).append(pos)
    out: list[np.ndarray | None] = [None] * len(indices)
    with av.open(path) as container:
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                kw = {"height": size[0], "width": size[1], "interpolation": "BICUBIC"} if size else {}
                arr = frame.to_ndarray(format="rgb24", **kw)
                for pos in wanted[i]:
                    out[pos] = arr
            if i >= max(indices):
                break
    got = [a for a in out if a is not None]
    if len(got) != len(indices):
        raise MediaError("decode_failed", f"pyav decoded {len(got)} of {len(indices)} requested frames")
    return np.stack(got)


def _to_rgb(im):
    """RGB of any PIL image. 16-bit grey (modes I;16*, and I as PIL opens 16-bit PNGs) is scaled to 8 bits first:
    PIL's own convert clips it at 255, which turns almost every pixel of a 16-bit image white."""
    from PIL import Image

    if im.mode == "I" or im.mode.startswith("I;16"):
        grey = (np.asarray(im).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return im.convert("RGB")


def read_image(path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 (1, H, W, 3) RGB. `size` = (h, w) resizes with PIL bicubic (fast path only)."""
    check_exists(path)
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = _to_rgb(im)
            if size is not None:
                im = im.resize((size[1], size[0]), Image.BICUBIC)
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as e:
        raise MediaError("bad_image", f"{type(e).__name__}: {e}") from e
    return arr[None]


def image_size(path: str) -> tuple[int, int]:
    check_exists(path)
    from PIL import Image

    try:
        with Image.open(path) as im:
            height, width = im.height, im.width
    except Exception as e:
        raise MediaError("bad_image", f"{type(e).__name__}: {e}") from e
    check_shape(height, width, "the image")
    return height, width


def pts_frame_times(src: VideoSource, indices: list[int]) -> list[float] | None:
    """The frames' presentation times from the container (seconds after frame 0), where index / average fps misplaces
    some frame by more than half a frame interval: a variable-frame-rate file (issue 32: off by up to 2 s). None for
    a constant-rate file (index / fps stays, bit-identical), or when the container gives no usable timestamps. Frame
    indices, and so the frames read, never change: only the times recorded for them."""
    try:
        if src.decoder == "decord":
            starts = [float(t) for t in src._reader.get_frame_timestamp([0, *indices])[:, 0]]
        else:
            starts = _pyav_pts(src.path, [0, *indices], src.num_frames)
    except Exception:  # timestamps are a refinement: a container without them keeps index / fps
        return None
    if starts is None or not all(np.isfinite(starts)):
        return None
    times = [t - starts[0] for t in starts[1:]]
    if any(b < a for a, b in zip(times, times[1:])) or (times and times[0] < 0):
        return None  # not in presentation order: not timestamps to trust
    if src.fps > 0 and all(abs(t - i / src.fps) <= 0.5 / src.fps for t, i in zip(times, indices)):
        return None
    return times


def _pyav_pts(path: str, indices: list[int], num_frames: int) -> list[float] | None:
    """Seconds of the given frames (presentation order) from the packets' pts, read by demuxing (nothing decoded)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        pts = [p.pts for p in container.demux(stream) if p.size > 0]
        if len(pts) != num_frames or any(p is None for p in pts):
            return None
        pts.sort()
        return [float(pts[i] * stream.time_base) for i in indices]
