"""Decode bounds (pipeline/extract/decode.py): an 8K video is decoded downscaled, a long GIF is counted without
decoding and refused past MAX_SEQUENTIAL_FRAMES, and the header probe refuses what the chat page must not decode."""
import numpy as np
import pytest

from pipeline.extract import decode
from pipeline.extract.decode import MediaError, bounded_size, check_video_bounds, open_video, probe_video
from pipeline.synth.media import write_video


def _gif(path, n: int):
    from PIL import Image

    frames = [Image.fromarray(np.full((20, 30, 3), i % 251, np.uint8)) for i in range(n)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40)
    return str(path)


def test_bounded_size_keeps_the_aspect_and_leaves_small_frames_alone():
    assert bounded_size(2160, 3840) is None  # 4K UHD is the default bound itself
    assert bounded_size(4320, 7680) == (2160, 3840)
    h, w = bounded_size(1000, 3000, 30_000)
    assert h * w <= 30_000 and abs(w / h - 3) < 0.1


def test_an_8k_video_is_decoded_downscaled_and_refused_by_the_header_probe(tmp_path):
    video = str(write_video(tmp_path / "8k.mp4", np.zeros((2, 4320, 7680, 3), np.uint8), fps=2.0))
    assert probe_video(video) == (4320, 7680, 1.0)
    src = open_video(video)
    frames = src.read([0, 1])
    assert frames.shape == (2, 2160, 3840, 3)  # 50 MB, not 200 MB: the decoder scaled it
    with pytest.raises(MediaError) as err:
        check_video_bounds(video, decode.MAX_PIXELS, None)
    assert err.value.reason == "too_large" and "7680x4320" in str(err.value) and str(tmp_path) not in str(err.value)
    check_video_bounds(video, 0, None)  # 0: no bound


def test_frames_within_the_bound_are_read_exactly_as_before(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (4, 48, 64, 3), dtype=np.uint8)
    video = str(write_video(tmp_path / "v.mp4", frames, fps=4.0))
    full = open_video(video, max_pixels=0).read([0, 3])
    assert np.array_equal(open_video(video).read([0, 3]), full)
    small = open_video(video, max_pixels=32 * 24).read([0, 3])
    assert small.shape == (2, 24, 32, 3)
    with pytest.raises(MediaError, match="lasts 1 s, more than the 0.5 s"):
        check_video_bounds(video, decode.MAX_PIXELS, 0.5)


def test_a_gif_is_counted_without_decoding_and_a_long_one_refused(tmp_path, monkeypatch):
    gif = _gif(tmp_path / "a.gif", 300)
    src = open_video(gif)
    assert (src.decoder, src.num_frames) == ("pyav", 300)
    assert list(src.read([0, 150, 299])[:, 0, 0, 0]) == [0, 150, 299 % 251]
    monkeypatch.setattr(decode, "MAX_SEQUENTIAL_FRAMES", 100)
    with pytest.raises(MediaError) as err:
        open_video(gif)
    assert err.value.reason == "too_many_frames"


def test_tiny_frames_decode_as_rgb(tmp_path):
    """decord returns 4 channels for some tiny H.264 frames (32×48): the reader falls back to PyAV, same pixels."""
    import av  # noqa: F401  (PyAV is the fallback decoder)

    from pipeline.extract.decode import _pyav_read, open_video
    from pipeline.synth.media import write_video

    frames = np.random.default_rng(0).integers(0, 255, (20, 32, 48, 3), dtype=np.uint8)
    path = write_video(tmp_path / "tiny.mp4", frames, fps=10.0)
    got = open_video(str(path)).read([0, 5, 10])
    assert got.shape == (3, 32, 48, 3)
    assert np.array_equal(got, _pyav_read(str(path), [0, 5, 10], None))
