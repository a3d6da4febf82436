"""YouCook2 in PDVC's `yc2_*.json` layout through the ActivityNet-format reader, and scored by the dvc path."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from manifests import read_dataset
from manifests.schema import Event

YC2 = Path(__file__).resolve().parents[1] / "data" / "youcook2" / "yc2_val.json"


def test_youcook2_rows_bare_ids_and_the_raw_video_tree(tmp_path):
    result = read_dataset("youcook2", YC2)
    rows = {r.source_id: r for r in result.rows}
    assert sorted(rows) == ["GLd3aX16zBg", "V53XmPeyjIU", "xHr8X2Wpmno"] and not result.rejected
    g = rows["GLd3aX16zBg"]
    assert g.dataset == "youcook2" and g.key == "GLd3aX16zBg" and g.duration == 241.62 and g.media == "GLd3aX16zBg.mp4"
    assert g.events[0] == Event(90.0, 102.0, "spread margarine on two slices of white bread") and len(g.events) == 4
    # the released raw-video tree, {subset}/{recipe_type}/{vid}.mp4, is found under --media-root
    (tmp_path / "validation" / "113").mkdir(parents=True)
    (tmp_path / "validation" / "113" / "GLd3aX16zBg.mp4").write_bytes(b"\0")
    (tmp_path / "xHr8X2Wpmno.mp4").write_bytes(b"\0")
    rooted = read_dataset("youcook2", YC2, media_root=tmp_path)
    assert {r.source_id: r.media for r in rooted.rows} == {
        "GLd3aX16zBg": str(tmp_path / "validation" / "113" / "GLd3aX16zBg.mp4"),
        "xHr8X2Wpmno": str(tmp_path / "xHr8X2Wpmno.mp4")}
    assert rooted.rejection_counts()["media_missing"] == 1
    # the same file read as ActivityNet gives the same events
    assert [r.events for r in read_dataset("activitynet", YC2).rows] == [r.events for r in result.rows]


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and the PTB tokenizer need Java")
def test_youcook2_dense_captions_scored(tmp_path):
    from eval.cli import app

    data = json.loads(YC2.read_text())
    exact = {"video": "GLd3aX16zBg", "events": [{"span": s, "sentence": t} for s, t in
                                                zip(data["GLd3aX16zBg"]["timestamps"], data["GLd3aX16zBg"]["sentences"])]}
    wrong = {"video": "xHr8X2Wpmno", "events": [{"span": [150, 190], "sentence": "serve the cake"}]}
    pred = tmp_path / "p.jsonl"
    pred.write_text(json.dumps(exact) + "\n" + json.dumps(wrong) + "\n")
    res = CliRunner().invoke(app, ["score", "--benchmark", "dvc", "--predictions", str(pred), "--annotations",
                                   str(YC2), "--dataset", "youcook2", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["n"] == 2 and m["missing"] == 1 and m["missing_videos"] == ["V53XmPeyjIU"]
    # video 1 is its ground truth (METEOR 1 at every tIoU, SODA_c 1), video 2 overlaps nothing: means are one half
    assert m["METEOR"] == pytest.approx(50.0, abs=0.5) and m["SODA_c"] == pytest.approx(50.0, abs=0.5)
    assert "warning: 1 annotated queries (dvc: videos)" in res.output
