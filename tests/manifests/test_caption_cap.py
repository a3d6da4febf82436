"""Caption length cap (manifests/common.py MAX_CAPTION_CHARS): an over-long caption or event sentence is a
`caption_too_long` rejection naming its length; the row's other events and the other rows stay."""
from __future__ import annotations

import json

from manifests import read_dataset
from manifests.common import CAPTION_TOO_LONG, MAX_CAPTION_CHARS


def test_over_long_captions_are_rejections_with_their_length(tmp_path):
    (tmp_path / "good.mp4").write_bytes(b"not decoded here")
    long = "a dog runs " * (MAX_CAPTION_CHARS // 10)  # just over the cap
    rows = [{"media": "good.mp4", "key": "ok", "caption": "a dog"},
            {"media": "good.mp4", "key": "longcap", "caption": long},
            {"media": "good.mp4", "key": "mixed", "events": [[1, 2, "runs"], [3, 4, long]]},
            {"media": "good.mp4", "key": "allong", "events": [[1, 2, long]]},
            {"media": "good.mp4", "key": "edge", "caption": "x" * MAX_CAPTION_CHARS}]
    ann = tmp_path / "a.jsonl"
    ann.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = read_dataset("files", ann, media_root=tmp_path)
    assert [r.key for r in result.rows] == ["ok", "mixed", "edge"]
    assert [ev.caption for ev in result.rows[1].events] == ["runs"]
    got = sorted((r.source_id.rsplit("#", 1)[-1] if "#" in r.source_id else "", r.reason) for r in result.rejected)
    assert got == [("", CAPTION_TOO_LONG), ("", "no_usable_events"), ("0", CAPTION_TOO_LONG), ("1", CAPTION_TOO_LONG)]
    assert f"{len(long.strip())} characters, more than {MAX_CAPTION_CHARS}" in result.rejected[0].detail
