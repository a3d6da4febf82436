"""Answer parsing (eval.parse) on realistic model answers, one test per documented rule."""
import pytest

from eval.parse import (
    dense_caption_events,
    grounding_answer_span,
    merge_similar,
    parse_dense_captions,
    parse_grounding,
    seconds_note,
)

DVC_JSON = ('Sure! [{"event": "A man walks into the room.", "timestamps": "from 00 to 24"}, '
            '{"event": "He sits down on the sofa.", "timestamps": "from 25 to 60"}, '
            '{"event": "He reads a book.", "timestamps": "from 61 to 99"}] Hope this helps.')


@pytest.mark.parametrize("answer, expected", [
    ("From 12 to 45.", (12, 45)),
    ("The person pours water between 03 and 17 of the video.", (3, 17)),
    ("It happens from 20 to 30, and again from 50 to 60.", (20, 30)),  # G1: the first pair wins
    ("During frames 60 to 20.", (60, 20)),  # G4: reversed kept as written
    ("from 100 to 120", (0, 12)),  # G5: 3-digit numbers, reference regex has no word boundary
    ("from 5 to 20", None),  # one-digit number: no match
    ("I cannot tell when that happens.", None),  # G3: no numbers
    ("around 45", None),
    ("", None),
])
def test_parse_grounding(answer, expected):
    assert parse_grounding(answer) == expected


def test_grounding_span_in_seconds_no_plus_one():
    assert grounding_answer_span("From 10 to 50.", 30.0) == pytest.approx((3.0, 15.0))  # G2: a/100·D, b/100·D
    assert grounding_answer_span("no idea", 30.0) is None


def test_dense_json_answer_with_extra_text():
    items = parse_dense_captions(DVC_JSON)
    assert items == [(0, 24, "A man walks into the room."), (25, 60, "He sits down on the sofa."),
                     (61, 99, "He reads a book.")]
    events = dense_caption_events(DVC_JSON, 200.0)
    # D5: start s/100·D, end (e+1)/100·D
    assert events[0][0] == pytest.approx((0.0, 50.0)) and events[2][0] == pytest.approx((122.0, 200.0))


def test_dense_broken_json_falls_back_or_fails():
    truncated = '[{"event": "A man walks.", "timestamps": "from 00 to 24"}, {"event": "He sits'
    assert parse_dense_captions(truncated) is None  # D1 no closing bracket, D3 no plain spans, D6 unparsable
    bad_json = '[{"event": "A man walks.", "timestamps": "from 00 to 24"},, ]'
    assert parse_dense_captions(bad_json) is None
    assert parse_dense_captions("The video shows a cooking show.") is None
    assert parse_dense_captions("[]") is None  # an empty list is no usable prediction


def test_dense_stops_at_first_malformed_item():
    answer = ('[{"event": "one", "timestamps": "from 00 to 10"}, {"event": "two"}, '
              '{"event": "three", "timestamps": "from 20 to 30"}]')
    assert parse_dense_captions(answer) == [(0, 10, "one")]  # D2
    assert parse_dense_captions('[{"event": "x", "timestamps": "from aa to bb"}]') is None


def test_dense_json_timestamps_sliced_like_the_reference():
    # characters 5–6 and the last two: "from 5 to 40" → int("5 ") = 5, "40"
    assert parse_dense_captions('[{"event": "x", "timestamps": "from 5 to 40"}]') == [(5, 40, "x")]


def test_dense_plain_format_stage2_style():
    answer = ("From 00 to 17, a man is skiing down a slope. From 17 to 45, he falls into the snow. "
              "from 46 to 99: he stands up.")
    assert parse_dense_captions(answer) == [(0, 17, "a man is skiing down a slope."),
                                            (17, 45, "he falls into the snow."), (46, 99, "he stands up.")]


def test_merge_near_duplicates_with_touching_spans():
    items = [(0, 10, "a man talks to the camera."), (11, 20, "a man talks to the camera."),
             (40, 50, "a man talks to the camera."), (51, 60, "a woman dances.")]
    # D4: the first two touch (11 − 10 = 1) and are identical → one event 0–20; the third is 20 away: kept.
    assert merge_similar(items) == [(0, 20, "a man talks to the camera."), (40, 50, "a man talks to the camera."),
                                    (51, 60, "a woman dances.")]
    answer = ('[{"event": "cutting vegetables", "timestamps": "from 10 to 20"}, '
              '{"event": "cutting vegetables", "timestamps": "from 19 to 30"}]')
    assert parse_dense_captions(answer) == [(10, 30, "cutting vegetables")]


def test_seconds_note_for_people():
    assert seconds_note("From 10 to 50.", 30.0) == "From 10 to 50 (3.0–15.0 s)."
