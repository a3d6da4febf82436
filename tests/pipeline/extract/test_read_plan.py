"""Seeking vs one forward pass (pipeline/extract/read_plan.py): the same frames, and the cost model by hand."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.contract.timing import frame_indices
from pipeline.extract import read_plan
from pipeline.extract.decode import open_video
from pipeline.synth.media import write_video


def counter_frames(n: int, size=(64, 48)):
    w, h = size
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:, : w // 2] = (i * 7) % 256
        f[:, w // 2:, i % 3] = 200
        yield f


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """300 frames at 30 fps, a keyframe every 25 frames: seeks and forward decoding both have work to do."""
    return write_video(tmp_path_factory.mktemp("rp") / "gop25.mp4", counter_frames(300), 30.0, gop=25)


@pytest.mark.parametrize("window", [None, (2.3, 7.9), (9.0, 9.6)])
def test_both_strategies_give_the_same_frames(clip, window):
    import decord

    n = len(decord.VideoReader(str(clip)))
    idx = frame_indices(n, 30.0, window)
    assert list(decord.VideoReader(str(clip)).get_key_indices())[:3] == [0, 25, 50]
    seek = read_plan.read(decord.VideoReader(str(clip), num_threads=1), idx, read_plan.SEEK)
    fwd = read_plan.read(decord.VideoReader(str(clip), num_threads=1), idx, read_plan.SEQUENTIAL)
    assert seek.shape == (100, 48, 64, 3) and np.array_equal(seek, fwd)
    # the frames are the requested ones: left-half grey level (7·i) mod 256, within codec noise
    assert np.abs(seek[:, :, :16].mean((1, 2, 3)) - [(i * 7) % 256 for i in idx]).max() < 6


def test_repeated_indices_and_the_auto_choice(clip, tmp_path):
    short = write_video(tmp_path / "short.mp4", counter_frames(37), 12.0, gop=10)
    src = open_video(str(short))
    idx = frame_indices(src.num_frames, src.fps)  # 37 frames, 100 samples: repeats
    auto = src.read(idx)
    src.strategy = read_plan.SEEK
    assert np.array_equal(auto, src.read(idx))
    src.strategy = read_plan.SEQUENTIAL
    assert np.array_equal(auto, src.read(idx))


def test_decoded_frames_by_hand():
    # keyframes every 100; samples 10, 20, 150: seeking decodes 0..10, 11..20, 100..150 = 11 + 10 + 51
    assert read_plan.decoded_frames([10, 20, 150], [0, 100, 200]) == (72, 151)
    assert read_plan.choose([10, 20, 150], [0, 100, 200]) == read_plan.SEEK
    # one GOP: seeking skips nothing, the forward pass is chosen
    assert read_plan.decoded_frames([0, 3, 6, 9], [0]) == (10, 10)
    assert read_plan.choose([0, 3, 6, 9], [0]) == read_plan.SEQUENTIAL
    # repeated indices cost nothing more; a window starts at its keyframe
    assert read_plan.decoded_frames([5, 5, 6], [0]) == (7, 7)
    assert read_plan.decoded_frames([130, 140], [0, 100]) == (41, 41)
