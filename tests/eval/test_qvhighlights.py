"""QVHighlights scoring: the metric rules on hand-computed cases, and `vtl-eval score --benchmark qvhighlights` on
the sample in tests/data/qvhighlights (its figures are worked by hand in docs/eval.md)."""
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.cli import app
from eval.qvh_metrics import (
    IOU_THRESHOLDS,
    clip_labels,
    highlight_detection,
    moment_retrieval,
    query_ap,
    saliency_ap,
    top1_iou,
    voc_ap,
    window_iou,
)

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "qvhighlights"
SAMPLE_METRICS = {  # worked by hand in docs/eval.md
    "MR-full-R1@0.5": 66.67, "MR-full-R1@0.7": 66.67, "MR-full-mAP": 59.17, "MR-full-mAP@0.5": 66.67,
    "MR-full-mAP@0.75": 66.67, "MR-short-mAP": 75.0, "MR-middle-mAP": 70.0, "MR-long-mAP": 0.0,
    "HL-min-Fair-mAP": 73.89, "HL-min-Fair-Hit1": 33.33, "HL-min-Good-mAP": 57.22, "HL-min-Good-Hit1": 33.33,
    "HL-min-VeryGood-mAP": 12.78, "HL-min-VeryGood-Hit1": 33.33,
}


def test_thresholds_and_iou():
    assert IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    assert window_iou((0, 10), (5, 15)) == pytest.approx(1 / 3)
    assert window_iou((140, 160), (140, 150)) == 0.5  # past the video's end: not clipped (clipped it would be 1)
    assert window_iou((10, 0), (0, 10)) == 0.0 and window_iou((5, 5), (0, 10)) == 0.0


def test_voc_ap_by_hand():
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 → 1/2·1 + 1/2·2/3
    assert voc_ap([True, False, True], 2) == pytest.approx(0.5 + 1 / 3)
    assert voc_ap([False, True], 1) == pytest.approx(0.5)
    assert voc_ap([False, False], 1) == 0.0


def test_equal_scores_keep_submission_order():
    gt = [(0, 10)]
    assert query_ap(gt, [(20, 30, 0.9), (0, 10, 0.9)]) == [0.5] * 10  # the miss is ranked first
    assert query_ap(gt, [(0, 10, 0.9), (20, 30, 0.9)]) == [1.0] * 10


def test_only_the_first_ten_windows_count_in_submission_order():
    gt = [(10, 50)]
    eleven = [(0, 2, 0.5)] * 10 + [(10, 50, 0.99)]  # the right window is the best scored, but 11th
    assert moment_retrieval({"q": gt}, {"q": eleven})["MR-full-mAP"] == 0.0
    assert moment_retrieval({"q": gt}, {"q": eleven[1:]})["MR-full-mAP"] == 100.0  # 10th: kept, ranked first
    assert top1_iou(gt, eleven) == 0.0


def test_r1_takes_the_first_listed_window_not_the_best_scored():
    gts = [(0, 10)]
    preds = [(0, 10, 0.1), (50, 60, 0.9)]
    assert top1_iou(gts, preds) == 1.0
    assert query_ap(gts, preds) == [0.5] * 10
    assert top1_iou(gts, []) == 0.0 and query_ap(gts, []) == [0.0] * 10


def test_equal_ground_truth_ious_take_the_later_window():
    # (2, 6) overlaps (4, 6) and (2, 10) both by IoU 0.5: the later window is taken, so (4, 6) stays for the second
    aps = query_ap([(4, 6), (2, 10)], [(2, 6, 0.9), (4, 6, 0.5)])
    assert aps[0] == 1.0  # both hits at 0.5
    assert aps[1] == pytest.approx(0.25)  # at 0.55 the first misses: precision 0, 1/2 at recall 0, 1/2


def test_length_ranges_keep_windows_in_range_and_boundaries():
    gts = {"a": [(0, 10)], "b": [(0, 4), (20, 32)], "c": [(0, 40)], "d": [(0, 30)]}
    preds = {"a": [(0, 10, 1.0)], "b": [(20, 32, 1.0)], "c": [(0, 40, 1.0)], "d": [(0, 30, 1.0)]}
    m = moment_retrieval(gts, preds)
    assert (m["MR-short-n"], m["MR-middle-n"], m["MR-long-n"]) == (2, 2, 1)  # 10 is short, 30 middle
    assert m["MR-short-mAP"] == 50.0  # b's short window (0, 4) is missed: AP 0; a: 1
    assert m["MR-middle-mAP"] == 100.0 and m["MR-long-mAP"] == 100.0
    assert m["MR-full-mAP"] == 87.5  # b: AP 1/2 (one of its two windows found)
    empty = moment_retrieval({"a": [(0, 8)]}, {"a": [(0, 8, 1.0)]})
    assert empty["MR-long-mAP"] is None and empty["MR-long-n"] == 0


def test_saliency_ap_by_hand():
    # scores 0.9 | 0.8 0.8 | 0.1: precision 1 at the first level, 2/3 at the second; both add a positive
    assert saliency_ap([True, False, True, False], [0.9, 0.8, 0.8, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    assert saliency_ap([False] * 3, [1, 2, 3]) == 0.0 and saliency_ap([True] * 3, [3, 2, 1]) == 1.0
    # interpolation: the level at 0.5 (precision 1/2) takes the 2/3 of the lower level
    assert saliency_ap([False, True, True], [0.9, 0.5, 0.1]) == pytest.approx(2 / 3)


def test_hit_at_one_ties_past_the_video_and_any_annotator():
    labels = {"q": clip_labels(8, [1, 2], [[0, 0, 2], [1, 1, 1]])}  # 4 clips; clip 1 positive for one annotator
    assert highlight_detection(labels, {"q": [0.1, 0.9, 0.9, 0.0]})["HL-min-Fair-Hit1"] == 100.0  # first of a tie
    assert highlight_detection(labels, {"q": [0.1, 0.5, 0.9, 0.0]})["HL-min-Fair-Hit1"] == 0.0
    assert highlight_detection(labels, {"q": [0, 0, 0, 0, 1.0]})["HL-min-Fair-Hit1"] == 0.0  # clip 4: past the end
    assert highlight_detection(labels, {"q": [0.1, 0.9, 0, 0]})["HL-min-Good-Hit1"] == 0.0
    missing = highlight_detection(labels, {})
    assert missing["HL-min-Fair-mAP"] == 0.0 and missing["HL-min-Fair-Hit1"] == 0.0


def _score(tmp_path, submission, annotations=SAMPLE / "annotations.jsonl", extra=()):
    return CliRunner().invoke(app, ["score", "--benchmark", "qvhighlights", "--predictions", str(submission),
                                    "--annotations", str(annotations), "--out", str(tmp_path / "out"), *extra])


def test_score_cli_on_the_sample_equals_the_hand_computed_figures(tmp_path):
    res = _score(tmp_path, SAMPLE / "submission.jsonl")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {k: metrics[k] for k in SAMPLE_METRICS} == SAMPLE_METRICS
    assert metrics["n"] == 3 and metrics["missing"] == 0 and metrics["by_length_n"] == {
        "short": 2, "middle": 1, "long": 1}
    assert "MR-full-mAP=59.17" in res.output and "warning" not in res.output
    assert (tmp_path / "out" / "run_config.json").is_file()


def test_missing_queries_count_as_misses_and_are_reported(tmp_path):
    first = (SAMPLE / "submission.jsonl").read_text().splitlines()[0]
    sub = tmp_path / "one.jsonl"
    sub.write_text(first + "\n")
    res = _score(tmp_path, sub)
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["missing"] == 2 and metrics["missing_qids"] == ["2", "3"] and metrics["n"] == 3
    assert metrics["MR-full-R1@0.5"] == 33.33 and metrics["MR-full-mAP"] == 33.33  # qid 1 alone is perfect
    assert metrics["HL-min-Fair-mAP"] == 33.33
    assert "warning: 2 annotated queries" in res.output


def test_bad_inputs_are_one_line_errors(tmp_path):
    test_split = tmp_path / "test.jsonl"
    test_split.write_text(json.dumps({"qid": 9, "query": "q", "vid": "x_0.0_150.0", "duration": 150}) + "\n")
    res = _score(tmp_path, SAMPLE / "submission.jsonl", test_split)
    assert res.exit_code == 2 and "no labels" in res.output
    bad = tmp_path / "bad.jsonl"
    lines = (SAMPLE / "submission.jsonl").read_text().splitlines()
    bad.write_text(lines[0] + "\n" + json.dumps({"qid": 2, "pred_relevant_windows": [[0, 4]]}) + "\n")
    res = _score(tmp_path, bad)
    assert res.exit_code == 2 and "bad.jsonl:2" in res.output and "[start, end, score]" in res.output
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"qid": 77, "pred_relevant_windows": [[0, 4, 1]]}) + "\n")
    res = _score(tmp_path, unknown)
    assert res.exit_code == 2 and "not in the annotations" in res.output
    res = _score(tmp_path, SAMPLE / "submission.jsonl", extra=("--dataset", "charades"))
    assert res.exit_code == 2 and "not used" in res.output


def test_windows_only_submission_scores_moment_retrieval_only(tmp_path):
    sub = tmp_path / "mr.jsonl"
    with open(SAMPLE / "submission.jsonl") as f, open(sub, "w") as out:
        for line in f:
            d = json.loads(line)
            del d["pred_saliency_scores"]
            out.write(json.dumps(d) + "\n")
    shutil.copy(SAMPLE / "annotations.jsonl", tmp_path / "gt.jsonl")
    res = _score(tmp_path, sub, tmp_path / "gt.jsonl")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["MR-full-mAP"] == 59.17 and not any(k.startswith("HL-") for k in metrics)
