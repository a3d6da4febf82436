"""InternVid stage-2 selection on hand-made clips: windows, events and reasons computed by hand."""
from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from manifests import read_dataset
from manifests.internvid import parse_time
from manifests.selection import Clip, SelectionRule, form_windows, non_overlapping, select


def hms(t: float) -> str:
    return f"{int(t // 3600):02d}:{int(t % 3600 // 60):02d}:{t % 60:06.3f}"


CLIPS = [  # (YoutubeID, start s, end s, caption)
    ("vidA", 0, 10, "a"), ("vidA", 10, 20, "b"), ("vidA", 15, 25, "overlaps b"), ("vidA", 20, 22, "too short"),
    ("vidA", 30, 40, "c"), ("vidA", 200, 210, "far"), ("vidA", 215, 225, "far two"),
    ("vidB", 0, 4, "lonely"), ("vidB", 100, 105, "q"), ("vidB", 105, 111, "r"),
    ("vidC", 0, 50, "only clip"),
    ("vidD", 0, 2, "short"), ("vidD", 5, 7, "short too"),
    ("vidE", 0, 130, "longer than a window"), ("vidE", 130, 135, "after"),
    ("vidF", 0, 10, "x"), ("vidF", 5, 15, "overlapping x"),
    ("vidG", 0, 4, "early"), ("vidG", 110, 114, "late"),
]
BAD = [{"YoutubeID": "vidH", "Start_timestamp": "soon", "End_timestamp": "00:00:05.000", "Caption": "bad time"},
       {"YoutubeID": "vidH", "Start_timestamp": "00:00:09.000", "End_timestamp": "00:00:05.000", "Caption": "inv"}]


def records() -> list[dict]:
    return [{"YoutubeID": v, "Start_timestamp": hms(s), "End_timestamp": hms(e), "Caption": c,
             "Aesthetic_Score": 4.5} for v, s, e, c in CLIPS] + BAD


@pytest.fixture(params=["jsonl", "csv"])
def annotations(request, tmp_path):
    path = tmp_path / f"internvid.{request.param}"
    if request.param == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records()))
    else:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(records()[0]))
            w.writeheader()
            w.writerows(records())
    return path


def test_parse_time():
    assert parse_time("00:02:09.800") == pytest.approx(129.8)
    assert parse_time("01:00:00.5") == 3600.5
    assert parse_time(12) == 12.0
    with pytest.raises(ValueError):
        parse_time("soon")


def test_selection_windows_and_reasons(annotations):
    result = read_dataset("internvid", annotations)
    rows = {r.key: r for r in result.rows}
    assert sorted(rows) == ["vidA_0", "vidB_100000"]
    a = rows["vidA_0"]
    # windows end 1 s after their last event (WINDOW_END_PAD_S, VTimeLLM's documented record)
    assert a.window == (0.0, 41.0) and a.duration == 41.0 and a.source_id == "vidA" and a.media == "vidA.mp4"
    assert [(e.start, e.end, e.caption) for e in a.events] == [(0, 10, "a"), (10, 20, "b"), (30, 40, "c")]
    b = rows["vidB_100000"]
    assert b.window == (100.0, 112.0) and b.duration == 12.0
    assert [(e.start, e.end) for e in b.events] == [(0, 5), (5, 11)]
    s = result.stats
    assert s["events_not_selected"] == {"event_too_short": 3, "event_overlaps": 2, "event_longer_than_window": 1,
                                        "window_too_few_events": 6, "window_over_video_limit": 2}
    assert s["videos_without_window"] == {"too_few_clips": 1, "too_few_long_events": 1,
                                          "too_few_events_within_max_window": 1,
                                          "too_few_non_overlapping_events": 1, "no_window_fits": 1}
    # vidH has no usable clip (both rejected), so 7 videos enter the selection
    assert (s["videos_in"], s["videos_kept"], s["windows_kept"], s["events_kept"]) == (7, 2, 2, 5)
    assert s["windows_over_video_limit"] == 1
    assert result.rejection_counts() == Counter(unparsable=1, start_not_before_end=1)
    # every clip is accounted for: kept, not selected (with a reason) or rejected
    assert s["clips_in"] == s["events_kept"] + sum(s["events_not_selected"].values()) + len(result.rejected) == 21


def test_all_windows_when_unlimited(annotations):
    result = read_dataset("internvid", annotations, max_windows_per_video=0)
    far = next(r for r in result.rows if r.key == "vidA_200000")
    assert far.window == (200.0, 226.0) and [(e.start, e.end) for e in far.events] == [(0, 10), (15, 25)]
    assert result.stats["windows_kept"] == 3 and "window_over_video_limit" not in result.stats["events_not_selected"]


def test_window_never_exceeds_rule_on_a_long_video():
    # 30 back-to-back 10 s clips (300 s): windows of at most 120 s → 12 clips each, the tail 6 clips form a third.
    clips = [Clip(10.0 * i, 10.0 * i + 10, f"c{i}") for i in range(30)]
    windows, dropped, why = select(clips, SelectionRule(max_windows_per_video=0))
    assert [len(w) for w in windows] == [12, 12, 6] and why is None and not dropped
    assert all(w[-1].end - w[0].start <= 120 for w in windows)


def test_mean_ratio_rule_is_strict():
    # two 4.8 s events spanning 60 s: mean 4.8 is exactly 8 % of 60, not more → no window
    windows, left = form_windows([Clip(0, 4.8, "x"), Clip(55.2, 60, "y")], SelectionRule())
    assert windows == [] and len(left) == 2
    windows, _ = form_windows([Clip(0, 4.9, "x"), Clip(55.2, 60, "y")], SelectionRule())
    assert len(windows) == 1


def test_non_overlapping_keeps_the_most_events():
    # start-order greedy would keep only the long first clip; earliest-end keeps the two short ones
    kept, dropped = non_overlapping([Clip(0, 20, "long"), Clip(1, 5, "p"), Clip(6, 10, "q")])
    assert [c.caption for c in kept] == ["p", "q"] and [c.caption for c in dropped] == ["long"]


def test_thresholds_are_options(annotations):
    result = read_dataset("internvid", annotations, min_event_s=1.0)
    assert result.stats["rule"]["min_event_s"] == 1.0
    with pytest.raises(ValueError):
        read_dataset("internvid", annotations, min_mean_ratio=2.0)


def test_window_ends_like_vtimellms_documented_record():
    """Issue 13 item 7: VTimeLLM's data.md record (split [129.8, 184.0], events 0–9.4 and 49.4–53.2 s) renders its last
    event "98"; a window cut at the last event would render every last event "99"."""
    from manifests.internvid import window_row
    from pipeline.contract.timing import render_time

    row = window_row("aMEDuIHmJJM", [Clip(129.8, 139.2, "a"), Clip(179.2, 183.0, "b")], None)
    assert row.window == (129.8, 184.0) and row.duration == pytest.approx(54.2)
    assert [render_time(t, row.duration) for e in row.events for t in (e.start, e.end)] == ["00", "17", "91", "98"]
