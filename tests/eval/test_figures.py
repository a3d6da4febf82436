"""`eval.figures`: what the timelines draw (pure functions), and that `vtl-eval score` writes them as real PNGs.

`VTL_UPDATE_DOCS_FIGURES=1` copies the timelines drawn from the real Charades-STA / ActivityNet excerpts (synthetic
predictions: the ground truth jittered, made here) to docs/img/ for docs/eval.md.
"""
import csv
import json
import os
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image
from support.real_data import REAL
from typer.testing import CliRunner

from eval.cli import app
from eval.config import ScoreConfig
from eval.figures import (
    TIMELINE,
    assign_lanes,
    dvc_timelines,
    grounding_rows,
    short_label,
    write_figures,
)

ROOT = Path(__file__).resolve().parents[2]
STA, CSV = REAL / "charades_sta_train_sample.txt", REAL / "Charades_v1_train_sample.csv"
ANET = REAL / "activitynet_captions_train_sample.json"
UPDATE_DOCS = os.environ.get("VTL_UPDATE_DOCS_FIGURES") == "1"


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG that PIL decodes in full."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        return im.size


def test_short_label_cuts_at_a_word():
    assert short_label("  a man\n opens   a door. ", 40) == "a man opens a door."
    assert short_label("a person is putting a book on a shelf", 20) == "a person is putting…"
    assert len(short_label("x" * 50, 10)) == 10 and short_label("x" * 50, 10).endswith("…")


def test_assign_lanes_keeps_overlapping_events_apart():
    spans = [(0, 10), (5, 15), (10, 20), (12, 14), (30, 40)]
    lanes = assign_lanes(spans)
    assert lanes == [0, 1, 0, 2, 0]  # touching (10 after 0–10) shares a lane; overlaps do not
    for i, a in enumerate(spans):
        for j, b in enumerate(spans[i + 1:], i + 1):
            if lanes[i] == lanes[j]:
                assert a[1] <= b[0] or b[1] <= a[0]
    assert assign_lanes([]) == []


def _record(video, sentence, duration, gt, span, iou, answer=None):
    return {"video": video, "sentence": sentence, "duration": duration, "answer": answer, "gt": list(gt),
            "span": list(span) if span else None, "iou": iou, "iou_seconds": iou}


def test_grounding_rows_are_the_first_n_as_fractions():
    records = [_record("v1", "a man runs", 20.0, (2.0, 10.0), (4.0, 10.0), 0.75, "From 20 to 50."),
               _record("v2", "a dog sits", 40.0, (0.0, 44.0), None, None, "I am not sure."),
               _record("v3", "it rains", 10.0, (1.0, 5.0), (6.0, 2.0), 0.0, "From 60 to 20."),
               _record("v4", "not drawn", 10.0, (1.0, 5.0), (1.0, 5.0), 1.0)]
    rows = grounding_rows(records, 3)
    assert len(rows) == 3 and rows[0].label == "v1: a man runs"
    assert rows[0].gt == (0.1, 0.5) and rows[0].pred == (0.2, 0.5) and not rows[0].reversed
    assert "IoU 0.75" in rows[0].note and "4.0–10.0 s" in rows[0].note
    # Unparsable: no predicted span, the answer quoted; a ground truth past the video's end is kept as published.
    assert rows[1].pred is None and rows[1].gt == (0.0, 1.1) and "unparsable: “I am not sure.”" in rows[1].note
    # Reversed (rule G4): drawn between its ends, and said so.
    assert rows[2].pred == (0.2, 0.6) and rows[2].reversed and "reversed" in rows[2].note
    assert grounding_rows(records, 0) == []


def test_dvc_timelines_first_k_videos_sorted_in_lanes():
    events = {"a": [((8.0, 12.0), "he jumps."), ((0.0, 10.0), "a man runs.")], "b": [], "c": [((0.0, 1.0), "x")]}
    gts = {"a": [((0.0, 6.0), "a man runs."), ((4.0, 12.0), "he jumps over a very long fence in the park.")],
           "b": [((1.0, 2.0), "a cat.")], "c": [((0.0, 1.0), "x")]}
    tl = dvc_timelines(events, gts, {"a": 12.0, "b": 3.0, "c": 1.0}, 2, unparsable=["b"], label_width=20)
    assert [v.video for v in tl] == ["a", "b"]
    a, b = tl
    assert [(e.start, e.end, e.lane) for e in a.predicted] == [(0.0, 10.0, 0), (8.0, 12.0, 1)]
    assert [e.label for e in a.truth] == ["a man runs.", "he jumps over a…"] and a.lanes == (2, 2)
    assert not a.unparsable and b.unparsable and b.predicted == () and b.lanes == (1, 1)


def test_timeline_counts_are_config_fields_checked(tmp_path):
    pred = tmp_path / "p.jsonl"
    pred.write_text("{}\n")
    assert ScoreConfig("grounding", pred, pred).timeline_queries == 20
    with pytest.raises(ValueError, match="timeline_queries must be in 0..200"):
        ScoreConfig("grounding", pred, pred, timeline_queries=-1)
    with pytest.raises(ValueError, match="timeline_videos must be in 0..50"):
        ScoreConfig("dvc", pred, pred, timeline_videos=51)


def test_write_figures_writes_pngs_of_sensible_size(tmp_path):
    records = [_record(f"v{i}", f"query number {i}", 30.0, (i, i + 5.0), (i + 1.0, i + 7.0) if i % 3 else None,
                       0.5 if i % 3 else None, "no idea") for i in range(12)]
    metrics = {"n": 12, "mIoU": 33.3, "R1@0.5": 40.0, "unparsed": 33.3}
    paths = write_figures(tmp_path, "grounding", {"ious": [r["iou"] for r in records], "records": records}, metrics,
                          queries=8, videos=5)
    assert paths == [tmp_path / "grounding.png", tmp_path / TIMELINE]
    w, h = _png_size(tmp_path / TIMELINE)
    assert 1000 <= w <= 2000 and 300 <= h <= 800  # 8 rows of ~32 px plus margins
    taller = write_figures(tmp_path, "grounding", {"ious": [], "records": records * 2}, metrics, 20, 5)[1]
    assert _png_size(taller)[1] > h  # more rows, taller
    # 0 = no timeline; the histogram is still written.
    (tmp_path / TIMELINE).unlink()
    assert write_figures(tmp_path, "grounding", {"ious": [], "records": records}, metrics, 0, 5) == \
        [tmp_path / "grounding.png"] and not (tmp_path / TIMELINE).exists()

    events = {"a": [((0.0, 5.0), "a man runs."), ((3.0, 9.0), "he jumps.")], "b": []}
    gts = {"a": [((0.0, 6.0), "a man runs."), ((5.0, 10.0), "he jumps.")], "b": [((1.0, 2.0), "a cat.")]}
    data = {"tious": [0.3, 0.5], "CIDEr": [1, 2], "METEOR": [3, 4], "BLEU4": [5, 6], "events": events, "gts": gts,
            "durations": {"a": 10.0, "b": 3.0}, "unparsable": ["b"]}
    paths = write_figures(tmp_path, "dvc", data, {"n": 2, "SODA_c": 12.0, "unparsed": 50.0}, 20, 5)
    assert paths == [tmp_path / "dvc.png", tmp_path / TIMELINE]
    w, h = _png_size(tmp_path / TIMELINE)
    assert 1000 <= w <= 2000 and 300 <= h <= 1200


def _jitter(rng, a, b, d):
    """Ground truth (a, b) seconds → plausibly wrong positions on VTimeLLM's 00–99 scale."""
    length = b - a
    s = a + rng.gauss(0, 0.2) * length
    e = b + rng.gauss(0, 0.2) * length
    return (min(max(round(s / d * 100), 0), 99), min(max(round(e / d * 100), 0), 99))


def grounding_predictions(n: int, seed: int = 0) -> list[dict]:
    """Answers for the first n queries of the Charades-STA excerpt: jittered ground truth, every 6th unparsable,
    the 10th reversed."""
    lengths = {r["id"]: float(r["length"]) for r in csv.DictReader(open(CSV))}
    rng = random.Random(seed)
    out = []
    for line in STA.read_text().splitlines():
        head, _, sentence = line.partition("##")
        vid, s, e = head.split()
        if vid not in lengths:
            continue
        a, b = _jitter(rng, float(s), float(e), lengths[vid])
        k = len(out)
        answer = ("I cannot tell from the video." if k % 6 == 5 else
                  f"From {b:02d} to {a:02d}." if k == 9 else f"The event happens from {a:02d} to {b:02d}.")
        out.append({"video": vid, "query": f"During which frames can we see {sentence.lower().rstrip('.')}?",
                    "answer": answer})
        if len(out) == n:
            return out
    raise AssertionError("excerpt too short")


def dvc_predictions(k: int, seed: int = 0) -> list[dict]:
    """VTimeLLM-layout JSON answers for the first k ActivityNet videos: each event jittered, the last one of every
    second video dropped, the third video unparsable."""
    rng = random.Random(seed)
    out = []
    for i, (vid, v) in enumerate(list(json.loads(ANET.read_text()).items())[:k]):
        d = v["duration"]
        pairs = list(zip(v["timestamps"], v["sentences"]))
        if i % 2:
            pairs = pairs[:-1] or pairs
        items = [{"event": s.strip(), "timestamps": "from {:02d} to {:02d}".format(*_jitter(rng, a, b, d))}
                 for (a, b), s in pairs]
        answer = "The video shows several events." if i == 2 else json.dumps(items)
        out.append({"video": vid, "query": "Could you please detail the events?", "answer": answer})
    return out


@pytest.mark.skipif(not STA.is_file(), reason="real Charades-STA excerpt not present")
def test_score_writes_grounding_timeline_on_real_charades(tmp_path):
    pred = tmp_path / "predictions.jsonl"
    pred.write_text("".join(json.dumps(x) + "\n" for x in grounding_predictions(30)))
    res = CliRunner().invoke(app, ["score", "--benchmark", "grounding", "--predictions", str(pred), "--annotations",
                                   str(STA), "--durations", str(CSV), "--timeline-queries", "16"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run_config.json").read_text())["config"]["timeline_queries"] == 16
    w, h = _png_size(tmp_path / TIMELINE)
    assert 1000 <= w <= 2000 and 500 <= h <= 900
    assert _png_size(tmp_path / "grounding.png") == (600, 400)
    if UPDATE_DOCS:
        shutil.copy(tmp_path / TIMELINE, ROOT / "docs" / "img" / "eval-grounding-timeline.png")


@pytest.mark.skipif(shutil.which("java") is None or not ANET.is_file(), reason="needs Java and the ActivityNet excerpt")
def test_score_writes_dvc_timeline_on_real_activitynet(tmp_path):
    pred = tmp_path / "predictions.jsonl"
    pred.write_text("".join(json.dumps(x) + "\n" for x in dvc_predictions(6)))
    res = CliRunner().invoke(app, ["score", "--benchmark", "dvc", "--predictions", str(pred), "--annotations",
                                   str(ANET), "--timeline-videos", "4"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["n"] == 6 and m["unparsed"] == pytest.approx(100 / 6)
    w, h = _png_size(tmp_path / TIMELINE)
    assert 1000 <= w <= 2000 and 500 <= h <= 2000
    if UPDATE_DOCS:
        shutil.copy(tmp_path / TIMELINE, ROOT / "docs" / "img" / "eval-dvc-timeline.png")
