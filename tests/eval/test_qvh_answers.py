"""QVHighlights answers → submission: the parsing rules by hand, and `vtl-eval qvhighlights` end to end on a tiny
random checkpoint with shards built by build-qa's own rule from the manifest reader's rows."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support.evaluation import tiny_checkpoint
from typer.testing import CliRunner

from eval.cli import app
from eval.qvh_answers import clip_scores, highlight_positions, moment_windows, submission_line
from eval.qvh_run import submission_lines
from manifests.qvhighlights import read_qvhighlights
from pipeline.contract.queries import qvh_query
from pipeline.contract.shards import Sample, ShardWriter, write_index
from pipeline.qa.rules import eval_conversation


def test_moment_windows_rules():
    # M1/M2: every pair, in order, seconds on the 0–99 scale, reversed pairs ordered, scores 1, 1/2, 1/3
    assert moment_windows("from 10 to 20, from 50 to 40 and 80 to 99", 150.0) == [
        [15.0, 30.0, 1.0], [60.0, 75.0, 0.5], [120.0, 148.5, 0.3333]]
    assert moment_windows("from 10 to 20, again from 10 to 20", 100.0) == [[10.0, 20.0, 1.0]]  # duplicates once
    assert moment_windows("no idea", 150.0) == []  # M3


def test_highlight_rules():
    ans = "The highlight frames are at 10, 12, 14. Their saliency scores are 3.0, 4.5, 2."
    assert highlight_positions(ans) == [(10, 3.0), (12, 4.5), (14, 2.0)]
    assert highlight_positions("frames 5 and 7") == [(5, 1.0), (7, 1.0)]  # H2: no scores → 1.0
    assert highlight_positions("at 5, 7. score 2.5") == [(5, 2.5), (7, 1.0)]
    assert highlight_positions("at 100 and 1.5") == []  # three digits and decimals are not positions
    # H3: D = 20 s → 10 clips; position 10 → 2 s → clip 1; 12 → 2.4 s → clip 1 (max kept); 99 → 19.8 s → clip 9
    assert clip_scores([(10, 3.0), (12, 4.5), (99, 2.0)], 20.0) == [0, 4.5, 0, 0, 0, 0, 0, 0, 0, 2.0]
    assert clip_scores([], 7.0) == [0.0, 0.0, 0.0]  # H4; ⌊7/2⌋ clips
    line = submission_line("5", "q", "v_0_150", 20.0, "from 00 to 50", "nothing")
    assert line == {"qid": "5", "query": "q", "vid": "v_0_150", "pred_relevant_windows": [[0.0, 10.0, 1.0]],
                    "pred_saliency_scores": [0.0] * 10}


def test_submission_lines_need_the_qid():
    lines = [{"id": "k_q0_mr", "video": "v", "sentence": "a dog", "duration": 10.0, "answer": "from 00 to 50"},
             {"id": "k_q0_hd", "video": "v", "sentence": "a dog", "duration": 10.0, "answer": "at 20. scores 4"}]
    subs, unparsed = submission_lines(lines, {("v", "a dog"): "7"})
    assert subs == [{"qid": "7", "query": "a dog", "vid": "v", "pred_relevant_windows": [[0.0, 5.0, 1.0]],
                     "pred_saliency_scores": [0.0, 4.0, 0.0, 0.0, 0.0]}] and unparsed == {"mr": 0, "hd": 0}
    with pytest.raises(ValueError, match="not in --annotations"):
        submission_lines(lines, {})


ANNOTATIONS = [
    {"qid": 1, "query": "A dog runs on the beach.", "vid": "abc_60_210", "duration": 150,
     "relevant_windows": [[10, 20], [40, 50]], "relevant_clip_ids": [5, 6, 20, 21], "saliency_scores":
     [[1, 2, 3], [4, 4, 2], [0, 1, 2], [3, 3, 3]]},
    {"qid": 2, "query": "a man talks", "vid": "abc_60_210", "duration": 150, "relevant_windows": [[100, 104]],
     "relevant_clip_ids": [50, 51], "saliency_scores": [[2, 2, 2], [1, 1, 1]]},
    {"qid": 3, "query": "cars pass by", "vid": "xyz_0_150", "duration": 126, "relevant_windows": [[0, 6]],
     "relevant_clip_ids": [0, 1, 2], "saliency_scores": [[4, 4, 4], [3, 3, 3], [2, 2, 2]]},
]


def qvh_shards(tmp_path, annotations):
    result = read_qvhighlights(annotations)
    out, gen = tmp_path / "shards", np.random.default_rng(0)
    with ShardWriter(out, "eval-qvhighlights", samples_per_shard=1) as writer:
        for row in result.rows:
            ev = [{"start": e.start, "end": e.end, "caption": e.caption} for e in row.events]
            conv, _ = eval_conversation("qvhighlights", row.key, ev)
            meta = {"key": row.key, "dataset": "qvhighlights", "source_id": row.source_id, "media": "none",
                    "kind": "video", "window": None, "duration": row.duration, "fps": 1.0, "num_frames": 100,
                    "frame_indices": [], "frame_times": [], "events": ev, "caption": None, "encoder": "random"}
            writer.write(Sample(row.key, gen.standard_normal((100, 768)).astype(np.float16), meta, conv))
    write_index(out, writer.shards, encoder="random", num_frames=100, dim=768, manifest_hash=None)
    return out


def test_build_qa_rule_asks_both_tasks_per_query():
    ev = [{"start": 10, "end": 20, "caption": "A dog runs."}, {"start": 40, "end": 50, "caption": "A dog runs."},
          {"start": 1, "end": 2, "caption": "a man talks"}]
    conv, dropped = eval_conversation("qvhighlights", "k", ev)
    assert [q["id"] for q in conv["queries"]] == ["k_q0_mr", "k_q0_hd", "k_q1_mr", "k_q1_hd"] and not dropped
    assert conv["queries"][0]["windows"] == [[10.0, 20.0], [40.0, 50.0]] and conv["queries"][0]["span"] == [10.0, 20.0]
    assert conv["queries"][1]["query"] == qvh_query("hd", "A dog runs.") and "a dog runs" in conv["queries"][1]["query"]
    assert conv["benchmark"] == "qvhighlights"


def test_vtl_eval_qvhighlights_end_to_end(tmp_path):
    torch.set_num_threads(1)
    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    ann = tmp_path / "highlight_val_release.jsonl"
    ann.write_text("".join(json.dumps(d) + "\n" for d in ANNOTATIONS))
    shards = qvh_shards(tmp_path, ann)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["qvhighlights", "--checkpoint", str(ckpt), "--shards", str(shards), "--out",
                                   str(out), "--annotations", str(ann), "--max-new-tokens", "16", "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    subs = [json.loads(x) for x in (out / "submission.jsonl").read_text().splitlines()]
    assert [s["qid"] for s in subs] == ["1", "2", "3"]
    assert [len(s["pred_saliency_scores"]) for s in subs] == [75, 75, 63]
    assert all(len(w) == 3 for s in subs for w in s["pred_relevant_windows"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 3 and m["missing"] == 0 and m["queries"] == 3 and "MR-full-mAP" in m and "HL-min-Fair-mAP" in m
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 6  # two answers a query
    # the same submission rescored by `vtl-eval score` gives the same figures
    res = CliRunner().invoke(app, ["score", "--benchmark", "qvhighlights", "--predictions", str(out / "submission.jsonl"),
                                   "--annotations", str(ann), "--out", str(tmp_path / "rescored")])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "rescored" / "metrics.json").read_text())
    assert {k: v for k, v in again.items() if k.startswith(("MR-", "HL-"))} == \
        {k: v for k, v in m.items() if k.startswith(("MR-", "HL-"))}
    # the test split (no labels): a submission, no scores
    test_ann = tmp_path / "highlight_test_release.jsonl"
    test_ann.write_text("".join(json.dumps({k: d[k] for k in ("qid", "query", "vid", "duration")}) + "\n"
                                for d in ANNOTATIONS))
    res = CliRunner().invoke(app, ["qvhighlights", "--checkpoint", str(ckpt), "--shards", str(shards), "--out",
                                   str(tmp_path / "test"), "--annotations", str(test_ann), "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "test" / "metrics.json").read_text())["scored"] is False
    assert len((tmp_path / "test" / "submission.jsonl").read_text().splitlines()) == 3
    res = CliRunner().invoke(app, ["qvhighlights", "--checkpoint", str(ckpt), "--shards", str(shards), "--out",
                                   str(tmp_path / "x")])
    assert res.exit_code == 2 and "--annotations is required" in res.output
