"""The QVHighlights reader on the sample in tests/data/qvhighlights and hand-made bad and test-split lines."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from manifests import read_dataset
from manifests.qvhighlights import read_records
from manifests.schema import Event

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "qvhighlights" / "annotations.jsonl"


def test_rows_are_videos_with_every_query_window_as_an_event():
    result = read_dataset("qvhighlights", SAMPLE)
    rows = {r.source_id: r for r in result.rows}
    assert set(rows) == {"aaaaaaaaaaa_0.0_20.0", "bbbbbbbbbbb_30.0_70.0", "ccccccccccc_60.0_120.0"}
    b = rows["bbbbbbbbbbb_30.0_70.0"]
    assert b.key == "bbbbbbbbbbb_30_0_70_0" and b.duration == 40.0 and b.window is None
    assert b.media == "bbbbbbbbbbb_30.0_70.0.mp4"
    assert b.events == (Event(0.0, 4.0, "A dog runs on the beach."), Event(20.0, 32.0, "A dog runs on the beach."))
    assert result.stats["queries_in"] == 3 and result.stats["queries_unlabeled"] == 0


def test_test_split_rows_are_kept_unlabeled_and_bad_lines_rejected(tmp_path):
    lines = [
        {"qid": 1, "query": "a man talks", "vid": "t1_0.0_150.0", "duration": 150},  # the test split: no labels
        {"qid": 2, "query": "a cat", "vid": "t2_0.0_150.0", "duration": 150, "relevant_windows": [[0, 4]]},
        {"qid": 3, "query": "a car", "vid": "t3_0.0_150.0", "duration": 150, "relevant_windows": [[0, 4]],
         "relevant_clip_ids": [80], "saliency_scores": [[1, 2, 3]]},  # clip 80 is past 150 s
        {"qid": 1, "query": "again", "vid": "t4_0.0_150.0", "duration": 150},
        {"qid": 5, "query": "x", "vid": "t5_0.0_150.0", "duration": float("inf")},
    ]
    path = tmp_path / "highlight_test_release.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in lines) + "\nnot json\n")
    result = read_dataset("qvhighlights", path)
    assert [(r.source_id, r.events, r.flags) for r in result.rows] == [("t1_0.0_150.0", (), ("unlabeled",))]
    assert result.rejection_counts() == Counter(unparsable=4, duplicate_id=1)
    assert result.stats["queries_unlabeled"] == 1
    with pytest.raises(ValueError, match=r"highlight_test_release.jsonl:2: unparsable: .*not \['relevant_clip_ids'"):
        read_records(path)
