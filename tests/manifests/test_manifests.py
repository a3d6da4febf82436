"""Readers on the real third-party samples, with counts recomputed independently from the raw files."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from support.real_data import REAL  # noqa: E402

from manifests import READERS, read_dataset
from manifests.didemo import consensus
from manifests.schema import KEY_RE

ANET = REAL / "activitynet_captions_train_sample.json"
CHARADES = REAL / "charades_sta_train_sample.txt"
CHARADES_CSV = REAL / "Charades_v1_train_sample.csv"
DIDEMO = REAL / "didemo_test_sample.json"

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="real samples not present")


def test_registry_names():
    assert set(READERS) == {"activitynet", "charades", "didemo", "internvid", "lcc", "vtimellm", "files", "qvhighlights",
                            "youcook2"}


def test_activitynet_dirty_events_found_and_flagged():
    raw = json.load(open(ANET))
    dirty = [(vid, s, e) for vid, v in raw.items() for s, e in v["timestamps"] if e > v["duration"] or s >= e]
    assert len(dirty) == 8                         # the README's figure, counted with plain json
    inverted = [d for d in dirty if d[1] >= d[2]]
    assert inverted == []                          # all 8 end late, by float noise only (docs/manifests.md)
    assert all(e - raw[vid]["duration"] < 1e-9 for vid, _, e in dirty)
    result = read_dataset("activitynet", ANET)
    assert len(result.rows) == len(raw) == 300
    assert sum(len(r.events) for r in result.rows) == sum(len(v["timestamps"]) for v in raw.values()) - len(inverted)
    assert result.stats["events_end_past_duration"] == 8
    flagged = {r.source_id for r in result.rows if "event_end_past_duration" in r.flags}
    assert flagged == {vid for vid, _, _ in dirty}
    assert len(flagged) == 5
    assert result.rejected == []


def test_activitynet_row_as_published():
    raw = json.load(open(ANET))
    row = next(r for r in read_dataset("activitynet", ANET).rows if r.source_id == "v_---9CpRcKoU")
    src = raw["v_---9CpRcKoU"]
    assert row.kind == "video" and row.window is None and row.duration == src["duration"]
    assert [(e.start, e.end) for e in row.events] == [tuple(t) for t in src["timestamps"]]
    assert row.events[1].caption == src["sentences"][1].strip() != src["sentences"][1]
    assert row.media == "v_---9CpRcKoU.mp4"


def test_activitynet_rejects_inverted_events_and_empty_videos(tmp_path):
    data = {"v_a": {"duration": 10.0, "timestamps": [[5, 2], [1, 4]], "sentences": [" x", " y"]},
            "v_b": {"duration": 10.0, "timestamps": [[3, 3]], "sentences": ["z"]},
            "v_c": {"duration": 10.0, "timestamps": [[1, 2]]}}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    result = read_dataset("activitynet", path)
    assert [r.key for r in result.rows] == ["v_a"]
    assert [(e.start, e.end, e.caption) for e in result.rows[0].events] == [(1.0, 4.0, "y")]
    assert result.rejection_counts() == Counter(start_not_before_end=2, no_usable_events=1, unparsable=1)


def test_activitynet_media_root_resolves_and_rejects_missing(tmp_path):
    (tmp_path / "v_---9CpRcKoU.webm").write_bytes(b"x")
    (tmp_path / "--0edUL8zmA.mkv").write_bytes(b"x")         # a mirror without the `v_` prefix
    result = read_dataset("activitynet", ANET, media_root=tmp_path)
    assert [r.media for r in result.rows] == [str(tmp_path / "v_---9CpRcKoU.webm"), str(tmp_path / "--0edUL8zmA.mkv")]
    assert result.rejection_counts() == Counter(media_missing=298)


def test_charades_counts_against_plain_parse():
    lengths = {r["id"]: float(r["length"]) for r in csv.DictReader(open(CHARADES_CSV))}
    queries = [ln.split("##")[0].split() for ln in open(CHARADES) if ln.strip()]
    past = sum(1 for vid, s, e in queries if float(e) > lengths[vid])
    vids = {q[0] for q in queries}
    result = read_dataset("charades", CHARADES, durations=CHARADES_CSV)
    assert len(result.rows) == len(vids) == 257
    assert sum(len(r.events) for r in result.rows) == len(queries) == 600
    assert result.stats["events_end_past_duration"] == past == 93
    assert result.flag_counts()["event_end_past_duration"] == len(
        {vid for vid, s, e in queries if float(e) > lengths[vid]})
    row = next(r for r in result.rows if r.key == "AO8RW")
    assert row.duration == lengths["AO8RW"]
    assert row.events[0] == type(row.events[0])(0.0, 6.9, "a person is putting a book on a shelf.")


def test_charades_missing_duration_and_bad_lines(tmp_path):
    ann = tmp_path / "sta.txt"
    ann.write_text("AAAAA 0.0 5.0##a person sits.\nBBBBB 1 2##x\nbroken line\nAAAAA 4 2##inverted.\n")
    durations = tmp_path / "d.csv"
    durations.write_text("id,length\nAAAAA,30.0\n")
    result = read_dataset("charades", ann, durations=durations)
    assert [r.key for r in result.rows] == ["AAAAA"] and len(result.rows[0].events) == 1
    assert result.rejection_counts() == Counter(no_duration=1, unparsable=1, start_not_before_end=1)
    with pytest.raises(ValueError, match="--durations"):
        read_dataset("charades", ann)


def test_didemo_consensus_rule():
    assert consensus([[4, 4], [4, 4], [0, 0], [4, 4]]) == ((4, 4), False)
    # three-way tie: summed IoU (self included) is 1+1/3+0 for (0,1), 1+1/3+1/2 for (1,2), 1+0+1/2 for (2,2)
    assert consensus([[0, 1], [1, 2], [2, 2]]) == ((1, 2), True)
    # the most common pair wins even when another pair overlaps more annotators
    assert consensus([[3, 3], [3, 3], [0, 5], [1, 4]]) == ((3, 3), False)
    # full tie without overlap: the earliest pair
    assert consensus([[3, 3], [1, 1]]) == ((1, 1), True)


def test_didemo_real_sample():
    raw = json.load(open(DIDEMO))
    videos = {q["video"] for q in raw}
    ties = 0
    for q in raw:
        c = Counter(map(tuple, q["times"])).most_common()
        ties += len(c) > 1 and c[0][1] == c[1][1]
    result = read_dataset("didemo", DIDEMO)
    assert len(result.rows) == len(videos) == 247
    assert sum(len(r.events) for r in result.rows) == len(raw) == 300
    assert result.stats["queries_tied"] == ties == 23
    # the same video published once as .mov and once as .mp4: one key gets a suffix
    stems = Counter(Path(v).stem for v in videos)
    assert result.flag_counts()["key_suffixed"] == sum(n - 1 for n in stems.values()) == 1
    first = raw[0]
    row = next(r for r in result.rows if r.source_id == first["video"])
    assert row.window == (0.0, 5.0 * first["num_segments"]) and row.duration == 30.0
    pair, _ = consensus(first["times"])
    assert (row.events[0].start, row.events[0].end) == (5.0 * pair[0], 5.0 * (pair[1] + 1))
    assert row.events[0].caption == first["description"].strip()


def test_didemo_window_clamped_to_real_length(tmp_path):
    ann = tmp_path / "d.json"
    ann.write_text(json.dumps([{"video": "1@N0_2_3.mov", "num_segments": 6, "description": "late",
                                "times": [[4, 5], [4, 5], [5, 5], [4, 5]]}]))
    durations = tmp_path / "len.csv"
    durations.write_text("id,duration\n1@N0_2_3.mov,27.5\n")
    row = read_dataset("didemo", ann, durations=durations).rows[0]
    assert row.window == (0.0, 27.5) and row.events[0].start == 20.0 and row.events[0].end == 27.5
    assert "event_clamped_to_window" in row.flags and row.key == "1_N0_2_3"


def test_keys_valid_and_unique_everywhere():
    for name, kw in (("activitynet", {}), ("charades", {"durations": CHARADES_CSV}), ("didemo", {})):
        path = {"activitynet": ANET, "charades": CHARADES, "didemo": DIDEMO}[name]
        keys = [r.key for r in read_dataset(name, path, **kw).rows]
        assert len(keys) == len(set(keys)) and all(KEY_RE.match(k) for k in keys)


def test_unknown_dataset_option_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        read_dataset("kinetics", ANET)
    with pytest.raises(FileNotFoundError):
        read_dataset("activitynet", tmp_path / "none.json")
    with pytest.raises(ValueError, match="no option"):
        read_dataset("activitynet", ANET, max_window_s=3)


def test_unique_keys_skip_taken_suffixes():
    from manifests.common import unique_keys
    from manifests.schema import ManifestRow, ReadResult

    rows = [ManifestRow(key=k, dataset="files", kind="video", media=f"{i}.mp4")
            for i, k in enumerate(["a", "a", "a_2", "a"])]
    out = unique_keys(ReadResult(rows=rows)).rows
    assert [r.key for r in out] == ["a", "a_3", "a_2", "a_4"]
    assert [r.flags for r in out] == [(), ("key_suffixed",), (), ("key_suffixed",)]
