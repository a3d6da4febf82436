"""Time formats: the default is VTimeLLM's two-digit rule exactly; each format renders, is read back by the eval
parser and converted to seconds within its resolution."""
import random

import pytest

from eval.parse import dense_caption_events, grounding_answer_span, parse_grounding
from pipeline.contract import timing
from pipeline.contract.queries import DVC_QUERY, dvc_query
from pipeline.contract.timing import TimeFormat


def test_default_is_bit_identical_to_the_two_digit_rule():
    fmt = TimeFormat()
    rng = random.Random(0)
    for _ in range(2000):
        d = rng.uniform(0.5, 400.0)
        t = rng.uniform(-2.0, d + 2.0)
        assert fmt.render(t, d) == timing.render_time(t, d)
        a, b = rng.randrange(100), rng.randrange(100)
        assert fmt.grounding_span(a, b, d) == timing.grounding_span(a, b, d)
        assert fmt.dense_span(a, b, d) == timing.dense_caption_span(a, b, d)
        assert fmt.fraction(a, d) == a / 100
    assert fmt.pattern == r"(\d{2})" and dvc_query(fmt) == DVC_QUERY


def test_relative_on_other_scales_pads_to_the_digits_n_minus_1_needs():
    assert TimeFormat(frames=64).render(30.0, 60.0) == "32"
    assert TimeFormat(frames=10).render(30.0, 60.0) == "5"
    assert TimeFormat(frames=1000).render(30.0, 60.0) == "500"
    assert TimeFormat(frames=1000).render(0.01, 60.0) == "000"


def test_seconds_and_frame_rendering():
    assert TimeFormat("seconds").render(12.46, 60.0) == "12.5s"
    assert TimeFormat("seconds", precision=2).render(3.14159, 60.0) == "3.14s"
    assert TimeFormat("seconds", precision=0).render(7.6, 60.0) == "8s"
    assert TimeFormat("frame", frames=11).render(30.0, 60.0) == "5"  # frames at 0, 6, …, 60 s
    assert dvc_query(TimeFormat("seconds")).endswith('"timestamps": "from xx.xs to xx.xs"}.')
    with pytest.raises(ValueError):
        TimeFormat("minutes")


@pytest.mark.parametrize("fmt", [TimeFormat(), TimeFormat(frames=64), TimeFormat("seconds"),
                                 TimeFormat("seconds", precision=2), TimeFormat("frame", frames=100),
                                 TimeFormat("frame", frames=37)], ids=str)
def test_round_trip_render_parse_seconds(fmt):
    rng = random.Random(1)
    for _ in range(300):
        d = rng.uniform(5.0, 300.0)
        s, e = sorted(rng.uniform(0, d) for _ in range(2))
        answer = f"From {fmt.render(s, d)} to {fmt.render(e, d)}."
        span = grounding_answer_span(answer, d, fmt)
        tol = fmt.resolution(d) + 1e-9
        assert abs(span[0] - s) <= tol and abs(span[1] - e) <= tol, (answer, s, e, span)
        dense = f'[{{"event": "a", "timestamps": "from {fmt.render(s, d)} to {fmt.render(e, d)}"}}]'
        (ds, de), text = dense_caption_events(dense, d, fmt=fmt)[0]
        assert text == "a" and abs(ds - s) <= tol
        # relative keeps VTimeLLM's +1 on dense ends (the end of the last position's bin)
        assert abs(de - e) <= tol + (d / fmt.frames if fmt.kind == "relative" else 0)


def test_parser_follows_the_format():
    assert parse_grounding("From 12.5s to 30.0s.", TimeFormat("seconds")) == (12.5, 30.0)
    assert parse_grounding("From 12.5s to 30.0s.") is None  # the default reads two-digit positions only
    assert parse_grounding("From 3 to 41.", TimeFormat("frame", frames=50)) == (3, 41)
    plain = "From 1.0s to 4.0s, a man walks. From 4.0s to 9.5s, he sits."
    events = dense_caption_events(plain, 10.0, fmt=TimeFormat("seconds"))
    assert events == [((1.0, 4.0), "a man walks."), ((4.0, 9.5), "he sits.")]
