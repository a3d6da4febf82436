"""The time contracts (pipeline.contract.timing): frame indices, frame times, timestamp quantisation and span parsing.

Expected values are computed by hand (comments show the arithmetic) or, for the frame-index rule, checked against
numpy.linspace(...).astype(int32), which is what VTimeLLM runs.
"""
import random

import numpy as np
import pytest

from pipeline.contract.timing import (
    NUM_FRAMES,
    dense_caption_span,
    frame_indices,
    frame_times,
    grounding_span,
    quantize,
    render,
    render_time,
)

# --- timestamp quantisation -------------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds,expected", [
    (0.0, "00"),    # 0 / 54.2 · 100 = 0
    (9.4, "17"),    # 9.4 / 54.2 · 100 = 17.34
    (49.4, "91"),   # 49.4 / 54.2 · 100 = 91.14
    (53.2, "98"),   # 53.2 / 54.2 · 100 = 98.15
])
def test_reference_worked_example(seconds, expected):
    assert render_time(seconds, 54.2) == expected


@pytest.mark.parametrize("seconds,duration,expected", [
    (12.5, 100.0, 12),   # 12.5 exactly: half to even → 12
    (37.5, 100.0, 38),   # 37.5 → 38 (even)
    (62.5, 100.0, 62),   # 62.5 → 62 (even)
    (1.5, 200.0, 1),     # 0.75 → 1
    (3.0, 8.0, 38),      # 37.5 → 38
    (1.0, 8.0, 12),      # 12.5 → 12
    (5.0, 8.0, 62),      # 62.5 → 62
])
def test_quantize_rounds_half_to_even(seconds, duration, expected):
    assert quantize(seconds, duration) == expected


@pytest.mark.parametrize("seconds,duration,expected", [
    (54.2, 54.2, 99),    # 100 → clamped to 99
    (54.0, 54.2, 99),    # 99.63 → 100 → 99
    (53.9, 54.2, 99),    # 99.45 → 99
    (60.0, 54.2, 99),    # an end past the duration (kept as published) → 99
    (-1.0, 54.2, 0),     # before the window → 0
    (0.27, 54.2, 0),     # 0.498 → 0
    (0.28, 54.2, 1),     # 0.517 → 1
])
def test_quantize_clamps(seconds, duration, expected):
    assert quantize(seconds, duration) == expected


def test_render_two_digits():
    assert [render(q) for q in (0, 7, 10, 99)] == ["00", "07", "10", "99"]
    for bad in (-1, 100):
        with pytest.raises(ValueError):
            render(bad)


@pytest.mark.parametrize("duration", [0.0, -3.0])
def test_quantize_needs_positive_duration(duration):
    with pytest.raises(ValueError, match="duration"):
        quantize(1.0, duration)


def test_span_parsing_rules():
    # grounding: (a/100·D, b/100·D); 17/100·54.2 = 9.214, 91/100·54.2 = 49.322
    s, e = grounding_span(17, 91, 54.2)
    assert s == pytest.approx(9.214) and e == pytest.approx(49.322)
    # dense captioning adds one position to the end: 92/100·54.2 = 49.864
    s, e = dense_caption_span(17, 91, 54.2)
    assert s == pytest.approx(9.214) and e == pytest.approx(49.864)
    assert dense_caption_span(0, 99, 10.0) == pytest.approx((0.0, 10.0))


# --- frame indices --------------------------------------------------------------------------------------------------

def test_frame_indices_hand_computed():
    assert frame_indices(10, 30.0, n=4) == [0, 3, 6, 9]            # linspace(0, 9, 4)
    assert frame_indices(11, 30.0, n=5) == [0, 2, 5, 7, 10]        # 0, 2.5, 5, 7.5, 10 truncated
    assert frame_indices(300, 30.0, (1.0, 2.0), n=4) == [30, 40, 50, 60]
    assert frame_indices(100, 25.0) == list(range(100))            # exactly one index per frame
    assert frame_indices(50, 25.0, n=1) == [0]
    assert frame_indices(5, 25.0, n=8) == [0, 0, 1, 1, 2, 2, 3, 4]  # fewer frames than samples: repeats
    idx = frame_indices(250, 25.0)
    assert len(idx) == NUM_FRAMES and idx[:4] == [0, 2, 5, 7] and idx[-1] == 249   # step 249/99 = 2.515


def test_frame_indices_window_partly_outside_the_file():
    # starts before the file: start = max(int(10·−2), 0) = 0; end = int(10·3) = 30
    assert frame_indices(100, 10.0, (-2.0, 3.0), n=4) == [0, 10, 20, 30]
    # ends after the file: end = min(int(10·20), 99) = 99; start = 50
    assert frame_indices(100, 10.0, (5.0, 20.0), n=3) == [50, 74, 99]
    # a window that collapses onto one frame still gives n indices
    assert frame_indices(100, 10.0, (1.0, 1.05), n=3) == [10, 10, 10]


def test_frame_indices_truncate_fractional_window_bounds():
    # fps·w0 = 29.97·1.5 = 44.955 → 44; fps·w1 = 29.97·3.3 = 98.901 → 98
    assert frame_indices(1000, 29.97, (1.5, 3.3), n=2) == [44, 98]


def _linspace_rule(num_frames, fps, window, n):
    if window is None:
        start, end = 0, num_frames - 1
    else:
        start, end = max(int(fps * window[0]), 0), min(int(fps * window[1]), num_frames - 1)
    return np.linspace(start, end, n).astype(np.int32).tolist()


def test_frame_indices_equal_numpy_linspace():
    rng = random.Random(1234)
    cases = [(n_frames, fps, None, n) for n_frames in (1, 2, 3, 99, 100, 101, 199, 1627, 7201)
             for fps in (23.976, 25.0, 29.97, 30.0) for n in (1, 2, 7, 100)]
    for _ in range(400):
        fps = rng.choice([10.0, 15.0, 23.976, 24.0, 25.0, 29.97, 30.0, 59.94, 60.0])
        n_frames = rng.randint(1, 20000)
        length = n_frames / fps
        w0 = rng.uniform(-5.0, length * 0.9)
        w1 = rng.uniform(max(w0, 0.0) + 0.5, length + 10.0)
        cases.append((n_frames, fps, (w0, w1), rng.choice([1, 3, 100, 100, 100])))
    checked = 0
    for n_frames, fps, window, n in cases:
        try:
            expected = _linspace_rule(n_frames, fps, window, n)
        except ValueError:
            continue
        if window is not None and int(fps * window[0]) > n_frames - 1:
            continue   # our function raises here instead (see test_frame_indices_errors)
        assert frame_indices(n_frames, fps, window, n) == expected, (n_frames, fps, window, n)
        checked += 1
    assert checked > 300


def test_frame_indices_errors():
    with pytest.raises(ValueError, match="no frames"):
        frame_indices(0, 30.0)
    with pytest.raises(ValueError, match="frame rate"):
        frame_indices(100, 0.0, (1.0, 2.0))
    with pytest.raises(ValueError, match="starts after the last frame"):
        frame_indices(100, 10.0, (12.0, 15.0))      # frame 120 > 99
    with pytest.raises(ValueError, match="empty"):
        frame_indices(100, 10.0, (3.0, 2.0))        # end frame 20 < start frame 30


def test_frame_times():
    assert frame_times([0, 15, 30], 30.0) == [0.0, 0.5, 1.0]
    assert frame_times([0, 12], 24.0) == [0.0, 0.5]
    assert frame_times([3, 4], 0.0) == [0.0, 0.0]   # images and unknown rates carry no time


def test_times_before_the_window_render_00_not_vtimellms_negative_string():
    """Issue 13 item 7, decided: VTimeLLM renders str(min(round(-1.6 / 54.2 * 100), 99)) = "-3"; vtl floors at "00"."""
    assert str(min(round(-1.6 / 54.2 * 100), 99)) == "-3"
    assert render_time(-1.6, 54.2) == "00" and render_time(-0.2, 54.2) == "00"
