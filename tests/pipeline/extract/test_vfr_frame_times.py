"""Issue 32, finding 16: a variable-frame-rate video's meta.json `frame_times` are its frames' presentation times, not
index / average fps; the sampled frames (VTimeLLM's index rule) and a constant-rate video's times do not change."""
from fractions import Fraction

import numpy as np

from pipeline.contract import timing
from pipeline.extract.decode import open_video
from pipeline.extract.steps import Item, SampleFrames
from pipeline.synth.media import write_video

MS = Fraction(1, 1000)


def _vfr_mp4(path, pts_ms: list[int]) -> str:
    """H.264 in MP4 with the given presentation times (ms): bursts at 25 fps separated by pauses of up to 1.4 s."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = stream.time_base = MS
        for i, pts in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (i * 7) % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, MS
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


def _gif(path, durations_ms: list[int]) -> str:
    from PIL import Image

    frames = [Image.fromarray(np.full((20, 30, 3), i * 9 % 251, np.uint8)) for i in range(len(durations_ms))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations_ms, disposal=1)
    return str(path)


def _sample(path: str, frames: int) -> tuple[dict, np.ndarray]:
    item = Item(row={"key": "k", "dataset": "files", "kind": "video", "media": path}, local=path)
    item.source = open_video(path)
    item = SampleFrames(sampling={"frames": frames}).process(item)
    return item.meta, item.frames


def _pts_ms(n: int) -> list[int]:
    pts, t = [], 0
    for i in range(n):
        pts.append(t)
        t += 1400 if i % 10 == 9 else 40  # a 1.4 s pause after every tenth frame
    return pts


def test_vfr_frame_times_are_the_frames_pts(tmp_path):
    pts = _pts_ms(40)
    path = _vfr_mp4(tmp_path / "vfr.mp4", pts)
    meta, frames = _sample(path, 8)
    src = open_video(path)
    indices = timing.sample_indices(src.num_frames, src.fps, None, frames=8)
    assert meta["frame_indices"] == indices  # VTimeLLM's index rule: the same frames are read
    assert np.array_equal(frames, src.read(indices))
    real = [pts[i] / 1000 for i in indices]
    assert max(abs(t - r) for t, r in zip(meta["frame_times"], real)) < 1e-3, (meta["frame_times"], real)
    old = timing.frame_times(indices, src.fps)
    assert max(abs(t - r) for t, r in zip(old, real)) > 0.5  # what index / average fps said


def test_a_vfr_gif_read_by_pyav_gets_its_pts_too(tmp_path):
    durations = [40, 40, 1000, 40, 40, 2000, 40, 40, 40, 40]
    path = _gif(tmp_path / "vfr.gif", durations)
    meta, _ = _sample(path, 5)
    assert meta["decoder"] == "pyav"
    starts = np.cumsum([0, *durations[:-1]]) / 1000
    real = [float(starts[i]) for i in meta["frame_indices"]]
    assert max(abs(t - r) for t, r in zip(meta["frame_times"], real)) < 1e-3, (meta["frame_times"], real)


def test_a_constant_rate_video_keeps_index_over_fps(tmp_path):
    rng = np.random.default_rng(0)
    path = str(write_video(tmp_path / "cfr.mp4", rng.integers(0, 255, (30, 32, 48, 3), dtype=np.uint8), fps=10.0))
    meta, _ = _sample(path, 7)
    src = open_video(path)
    assert meta["frame_times"] == timing.frame_times(meta["frame_indices"], src.fps)  # bit-identical
