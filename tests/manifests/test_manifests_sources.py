"""LCC-558K, VTimeLLM's released JSON and a user's own files, on hand-made inputs in the published formats."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from manifests import read_dataset
from manifests.schema import Event
from manifests.vtimellm import captions_from_dialogue


def test_lcc(tmp_path):
    data = [
        {"id": "004539375", "image": "00453/004539375.jpg", "conversations": [
            {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
            {"from": "gpt", "value": " select luxury furniture 3 - inch gel memory foam mattress topper "}]},
        {"id": "004539375", "image": "00453/004539375b.jpg", "conversations": [{"from": "gpt", "value": "dup id"}]},
        {"id": "1", "conversations": [{"from": "gpt", "value": "no image"}]},
        {"id": "2", "image": "2.jpg", "conversations": [{"from": "human", "value": "<image>"}]},
        ["not", "a", "record"],
    ]
    path = tmp_path / "blip_laion_cc_sbu_558k.json"
    path.write_text(json.dumps(data))
    result = read_dataset("lcc", path, media_root=None)
    assert [(r.key, r.kind, r.media, r.caption) for r in result.rows] == [
        ("004539375", "image", "00453/004539375.jpg",
         "select luxury furniture 3 - inch gel memory foam mattress topper"),
        ("004539375_2", "image", "00453/004539375b.jpg", "dup id")]
    assert result.rows[1].flags == ("key_suffixed",) and result.rows[1].source_id == "004539375"
    assert result.rejection_counts() == Counter(no_media=1, no_caption=1, unparsable=1)
    (tmp_path / "00453").mkdir()
    (tmp_path / "00453" / "004539375.jpg").write_bytes(b"jpg")
    rooted = read_dataset("lcc", path, media_root=tmp_path)
    assert [r.media for r in rooted.rows] == [str(tmp_path / "00453" / "004539375.jpg")]
    assert rooted.rejection_counts()["media_missing"] == 1


def test_relative_media_root_is_stored_absolute(tmp_path, monkeypatch):
    """Ray workers on other nodes run in other folders: a manifest never stores a path relative to the builder's."""
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.jpg").write_bytes(b"jpg")
    (tmp_path / "lcc.json").write_text(json.dumps([{"id": "a", "image": "a.jpg", "conversations": [
        {"from": "gpt", "value": "a caption"}]}]))
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "b.mp4").write_bytes(b"mp4")
    monkeypatch.chdir(tmp_path)
    assert [r.media for r in read_dataset("lcc", "lcc.json", media_root="media").rows] == [
        str(tmp_path / "media" / "a.jpg")]
    assert [r.media for r in read_dataset("files", "own").rows] == [str(tmp_path / "own" / "b.mp4")]


STAGE2 = {"source": "internvid", "id": "aMEDuIHmJJM", "conversations": [
    {"from": "human", "value": "<video>\nCould you please detail the events that took place?"},
    {"from": "gpt", "value": "From <s0> to <e0>, a man talks to the camera. From <s1> to <e1>, he waves goodbye."}],
    "meta": {"split": [129.8, 184.0], "duration": 54.2,
             "token": {"<s0>": 0, "<e0>": 9.4, "<s1>": 49.4, "<e1>": 53.2}}}
MULTI = {"source": "anet", "id": "v_abc", "conversations": [
    {"from": "human", "value": "<video>\nWhat happened from <s2> to <e2> in the video?"},
    {"from": "gpt", "value": "A dog runs."},
    {"from": "human", "value": "During which frames does the cat sleep?"},
    {"from": "gpt", "value": "From <s1> to <e1>."}],
    "meta": {"duration": 20.0, "token": {"<s1>": 1.0, "<e1>": 5.0, "<s2>": 6.0, "<e2>": 21.0, "<s3>": 7.0}}}


def test_captions_from_dialogue():
    assert captions_from_dialogue(STAGE2["conversations"]) == {0: "a man talks to the camera", 1: "he waves goodbye"}
    assert captions_from_dialogue(MULTI["conversations"]) == {2: "A dog runs"}


def test_vtimellm_records(tmp_path):
    no_meta = {"source": "videoinstruct", "id": "v_xyz", "conversations": [{"from": "human", "value": "<video>\nhi"}]}
    bad_split = {"id": "bad", "conversations": [], "meta": {"split": [5, 5], "duration": 0}}
    path = tmp_path / "stage3.json"
    path.write_text(json.dumps([STAGE2, MULTI, dict(MULTI), no_meta, bad_split, {"conversations": []}]))
    result = read_dataset("vtimellm", path)
    rows = {r.key: r for r in result.rows}
    assert sorted(rows) == ["aMEDuIHmJJM", "v_abc", "v_abc_2", "v_xyz"]
    s2 = rows["aMEDuIHmJJM"]
    assert s2.window == (129.8, 184.0) and s2.duration == 54.2 and s2.source_id == "aMEDuIHmJJM"
    assert s2.events == (Event(0.0, 9.4, "a man talks to the camera"), Event(49.4, 53.2, "he waves goodbye"))
    assert s2.flags == () and s2.media == "aMEDuIHmJJM.mp4"
    m = rows["v_abc"]
    assert m.window is None and m.events == (Event(1.0, 5.0, ""), Event(6.0, 21.0, "A dog runs"))
    assert m.flags == ("event_end_past_duration", "unpaired_token")
    assert rows["v_abc_2"].source_id == "v_abc" and "key_suffixed" in rows["v_abc_2"].flags
    assert rows["v_xyz"].duration is None and rows["v_xyz"].flags == ("no_meta",)
    assert result.rejection_counts() == Counter(bad_window=1, unparsable=1)
    assert result.stats["records_by_source"] == {"anet": 2, "internvid": 1, "unknown": 2, "videoinstruct": 1}


def test_files_folder(tmp_path):
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    for name in ("clip one.mp4", "sub/clip one.MKV", "photo.JPG", "notes.txt", ".hidden.mp4"):
        (root / name).write_bytes(b"x")
    result = read_dataset("files", root)
    assert [(r.key, r.kind) for r in result.rows] == [("clip_one", "video"), ("photo", "image"),
                                                      ("clip_one_2", "video")]
    assert result.rows[2].media == str((root / "sub" / "clip one.MKV").resolve())
    assert result.rows[2].flags == ("key_suffixed",)
    assert result.rejection_counts() == Counter(not_media=1)
    assert result.stats["inputs"] == 4                       # the hidden file is not an input
    single = read_dataset("files", root / "photo.JPG")
    assert [(r.key, r.kind) for r in single.rows] == [("photo", "image")]


def test_files_jsonl(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    lines = [
        {"media": "a.mp4", "key": "my.clip", "window": [2, 12], "caption": " a clip ",
         "events": [{"start": 0, "end": 4, "caption": "first"}, [5, 11, "past end"], [6, 6, "empty"]]},
        {"media": "b.png", "caption": "an image"},
        {"media": "a.mp4", "window": {"start": 3, "end": 1}},
        {"media": "missing.mp4"},
        {"caption": "no media"},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "{broken\n\n")
    result = read_dataset("files", path)
    first, image = result.rows
    assert first.key == "my_clip" and first.window == (2.0, 12.0) and first.duration == 10.0
    assert first.media == str(tmp_path / "a.mp4") and first.caption == "a clip"
    assert first.events == (Event(0, 4, "first"), Event(5, 11, "past end"))
    assert first.flags == ("event_end_past_duration",)
    assert (image.key, image.kind, image.duration) == ("b", "image", None)
    assert result.rejection_counts() == Counter(start_not_before_end=1, bad_window=1, media_missing=1, no_media=1,
                                                unparsable=1)
    assert result.stats["inputs"] == 6


def test_files_media_root_for_jsonl(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "x.webm").write_bytes(b"x")
    path = tmp_path / "list.jsonl"
    path.write_text(json.dumps({"media": "x.webm", "duration": 7.5}) + "\n")
    row = read_dataset("files", path, media_root=tmp_path / "videos").rows[0]
    assert row.media == str(tmp_path / "videos" / "x.webm") and row.duration == 7.5
    with pytest.raises(ValueError, match="media-root"):
        read_dataset("files", tmp_path / "videos", media_root=tmp_path)
