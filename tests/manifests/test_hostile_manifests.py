"""The manifest readers against issue 32's hostile inputs (items 2, 8, 9, 10, 11): each bad record becomes one
rejection with a reason, naming its file and line where it has one; nothing bad reaches a manifest row, and the
good rows beside the bad ones are kept."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from manifests import read_dataset


def _jsonl(path: Path, lines: list) -> Path:
    with open(path, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n")
    return path


@pytest.fixture
def media(tmp_path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    (root / "good.mp4").write_bytes(b"not decoded here")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.mp4").write_bytes(b"secret")
    return root


def test_bad_values_are_rejected_not_turned_into_text(tmp_path, media):
    ann = _jsonl(tmp_path / "a.jsonl", [
        {"media": "good.mp4", "key": "ok", "caption": "a dog", "events": [[1, 2, "runs"]]},
        {"media": "good.mp4", "key": "nullcap", "events": [{"start": 10, "end": 21, "caption": None}]},
        {"media": "good.mp4", "key": "listcap", "caption": ["a", "b"]},
        {"media": "good.mp4", "key": "booldur", "duration": True},
        {"media": "good.mp4", "key": "strdur", "duration": "10"},
        {"media": "good.mp4", "key": "infwin", "window": [0, float("inf")]},
    ])
    result = read_dataset("files", ann, media_root=media)
    assert [r.key for r in result.rows] == ["ok"] and result.rows[0].caption == "a dog"
    reasons = {r.source_id: r.reason for r in result.rejected}
    assert reasons == {f"a.jsonl:{n}": "bad_value" for n in range(2, 7)}  # named by file and line
    assert "is not a string" in result.rejected[0].detail and "not a finite number" in result.rejected[-1].detail


def test_one_bad_line_is_one_rejection_naming_file_and_line(tmp_path, media):
    ann = _jsonl(tmp_path / "a.jsonl", [
        {"media": "good.mp4", "key": "first"},
        b'{"media": "good.mp4", "key": "caf\xe9"}\n',  # Latin-1, not UTF-8
        {"media": "x" * 10_000 + ".mp4", "key": "long"},
        {"media": "bad\u0000.mp4", "key": "nul"},
        {"media": "good.mp4", "key": "last"},
    ])
    result = read_dataset("files", ann, media_root=media)
    assert [r.key for r in result.rows] == ["first", "last"]
    got = {(r.source_id, r.reason) for r in result.rejected}
    assert got == {("a.jsonl:2", "unparsable"), ("long", "bad_id"), ("nul", "bad_id")}


def test_ids_cannot_leave_the_media_root(tmp_path, media):
    ann = _jsonl(tmp_path / "a.jsonl", [{"media": "../outside/secret.mp4", "key": "up"},
                                        {"media": "/etc/passwd", "kind": "image", "key": "abs"},
                                        {"media": "good.mp4", "key": "ok"}])
    result = read_dataset("files", ann, media_root=media)
    assert [r.key for r in result.rows] == ["ok"]
    assert {(r.source_id, r.reason) for r in result.rejected} == {("up", "bad_id"), ("abs", "bad_id")}

    # A dataset reader building paths from ids: Charades-STA lines (`id start end##sentence`).
    lines = ["../outside/secret 0.0 5.0##a person opens a door", "/etc/passwd 0.0 5.0##a person sits",
             "x" * 10_000 + " 0.0 5.0##a person stands", "good 0.0 5.0##a person walks"]
    (tmp_path / "sta.txt").write_text("\n".join(lines) + "\n")
    ids = ["../outside/secret", "/etc/passwd", "x" * 10_000, "good"]
    (tmp_path / "d.csv").write_text("id,length\n" + "".join(f"{i},30.0\n" for i in ids))
    result = read_dataset("charades", tmp_path / "sta.txt", durations=tmp_path / "d.csv", media_root=media)
    assert [r.source_id for r in result.rows] == ["good"]
    assert sorted(r.reason for r in result.rejected) == ["bad_id"] * 3


def test_file_urls_work_and_http_media_is_kept_for_download(tmp_path, media):
    good = media / "good.mp4"
    ann = _jsonl(tmp_path / "a.jsonl", [{"media": good.as_uri(), "key": "url"},
                                        {"media": "file:///no/such/file.mp4", "key": "gone"},
                                        {"media": "http://example.com/v.mp4", "key": "web"},
                                        {"media": "s3://bucket/v.mp4", "key": "s3"},
                                        {"media": "ftp://example.com/v.mp4", "key": "ftp"}])
    result = read_dataset("files", ann)
    assert {r.key: r.media for r in result.rows} == {"url": str(good), "s3": "s3://bucket/v.mp4",
                                                     "web": "http://example.com/v.mp4"}
    assert {r.key: r.flags for r in result.rows}["web"] == ("remote_media",)  # for download; extract records it
    assert {(r.source_id, r.reason) for r in result.rejected} == {("/no/such/file.mp4", "media_missing"),
                                                                  ("ftp", "unsupported_media")}
