"""`vtl-eval qvhighlights`: the model's answers to the moment-retrieval and highlight-detection queries of
`build-qa --benchmark qvhighlights` shards, turned into the benchmark's submission JSONL (`submission.jsonl`) and
scored with `eval.qvhighlights` when `--annotations` is a labelled split (val); the test split's submission is
written for the benchmark's server. Each shard query finds its qid in `--annotations` by (vid, query text).
"""
from __future__ import annotations

import json

from eval.qvh_answers import moment_windows, submission_line
from manifests.qvhighlights import read_records

SUBMISSION = "submission.jsonl"


def submission_lines(lines: list[dict], qids: dict[tuple[str, str], str]) -> tuple[list[dict], dict]:
    """Prediction lines (ids `{key}_q{i}_mr|hd`) → submission lines in query order, and unparsed counts."""
    asked: dict[str, dict] = {}
    for line in lines:
        base, task = line["id"].rsplit("_", 1)
        asked.setdefault(base, {"line": line})[task] = line["answer"]
    out, unparsed = [], {"mr": 0, "hd": 0}
    for base, got in asked.items():
        line = got["line"]
        qid = qids.get((line["video"], line["sentence"].strip()))
        if qid is None:
            raise ValueError(f"query {base} (vid {line['video']}, {line['sentence']!r}) is not in --annotations: "
                             "give the annotation file the shards were built from")
        sub = submission_line(qid, line["sentence"], line["video"], line["duration"], got.get("mr"), got.get("hd"))
        unparsed["mr"] += "mr" in got and not moment_windows(got["mr"], line["duration"])
        unparsed["hd"] += "hd" in got and not any(sub.get("pred_saliency_scores", [1]))
        out.append(sub)
    return out, unparsed


def finish_qvhighlights(cfg, lines: list[dict], timing: dict) -> dict:
    """Write submission.jsonl, metrics.json (scored when the annotations are labelled) and run_config.json."""
    from eval.qvhighlights import read_submission, read_truth, score_submission
    from infra.storage import write_bytes_atomic, write_json_atomic
    from pipeline.contract.provenance import RUN_CONFIG, producer

    records = read_records(cfg.annotations)
    subs, unparsed = submission_lines(lines, {(r.vid, r.query.strip()): r.qid for r in records})
    path = cfg.out / SUBMISSION
    write_bytes_atomic(path, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in subs).encode("utf-8"))
    if all(r.labeled for r in records):
        metrics = score_submission(read_submission(path), read_truth(cfg.annotations))
    else:
        metrics = {"scored": False, "reason": f"{cfg.annotations} has unlabelled queries (the test split): submit "
                   f"{SUBMISSION} to the benchmark's server"}
    metrics.update({"queries": len(subs), "unparsed_mr": unparsed["mr"], "unparsed_hd": unparsed["hd"]})
    write_json_atomic(cfg.out / "metrics.json", metrics)
    write_json_atomic(cfg.out / RUN_CONFIG, {"command": cfg.benchmark, "config": cfg.to_json(), "generation": timing,
                                             "producer": producer()})
    return metrics
