"""`vtl-eval score --benchmark qvhighlights`: the benchmark's own JSONL submission scored against its annotations.

A submission line is `{"qid", "query", "vid", "pred_relevant_windows": [[start, end, score], ...],
"pred_saliency_scores": [score per 2-second clip, ...]}` (moment_detr's format; `query` and `vid` are not needed).
As in the reference scorer, the first line decides which tasks are scored: moment retrieval when it has
`pred_relevant_windows`, highlight detection when it has `pred_saliency_scores`; every other line must then have
them too. Annotations are the benchmark's JSONL (`manifests.qvhighlights.read_records`); the test split has no labels
and cannot be scored here.

Missing queries: the reference scorer refuses a submission whose qids differ from the annotations'. Here a query of
the annotations without a prediction counts as a miss (0 in every figure, so a partial submission never scores
higher than a complete one), and `metrics.json` says how many (`missing`, the first ids in `missing_qids`); the CLI
prints a warning line. A prediction for a qid the annotations lack is an error.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from eval.qvh_metrics import clip_labels, highlight_detection, moment_retrieval
from manifests.qvhighlights import Record, qid_text, read_records

MR_KEY, HL_KEY = "pred_relevant_windows", "pred_saliency_scores"
MISSING_LISTED = 20
"""How many missing qids metrics.json names (the count is always there)."""


@dataclass(frozen=True)
class Submission:
    """One query's predictions: scored windows (start, end, score) and clip scores, None when not submitted."""

    windows: tuple[tuple[float, float, float], ...] | None
    saliency: tuple[float, ...] | None


def _numbers(value, what: str, width: int | None = None) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{what} must be a list, got {type(value).__name__}")
    try:
        nums = tuple(float(x) for x in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must hold numbers, got {value!r}") from None
    if width is not None and len(nums) != width:
        raise ValueError(f"{what} must be [start, end, score], got {value!r}")
    if not all(math.isfinite(x) for x in nums):
        raise ValueError(f"{what} holds a non-finite number")
    return nums


def _parse_line(d: dict, tasks: tuple[bool, bool]) -> Submission:
    windows = saliency = None
    if tasks[0]:
        raw = d.get(MR_KEY)
        if not isinstance(raw, list):
            raise ValueError(f"no {MR_KEY} list (the first line has one)")
        windows = tuple(_numbers(w, "a predicted window", 3) for w in raw)
    if tasks[1]:
        saliency = _numbers(d.get(HL_KEY), HL_KEY)
    return Submission(windows, saliency)


def read_submission(path: str | Path) -> dict[str, Submission]:
    """qid → Submission, in file order; a malformed line stops with its line number."""
    out: dict[str, Submission] = {}
    tasks: tuple[bool, bool] | None = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                if not isinstance(d, dict):
                    raise ValueError("a line must be a JSON object")
                if tasks is None:
                    tasks = (MR_KEY in d, HL_KEY in d)
                    if not any(tasks):
                        raise ValueError(f"a submission line needs {MR_KEY} and/or {HL_KEY}")
                qid = qid_text(d.get("qid"))
                if qid in out:
                    raise ValueError(f"qid {qid} given twice")
                out[qid] = _parse_line(d, tasks)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
    if not out:
        raise ValueError(f"{path}: no predictions")
    return out


def read_truth(path: str | Path) -> dict[str, Record]:
    """qid → labelled record; unlabeled (test split) lines and malformed lines are errors here."""
    records = read_records(path)
    unlabeled = [r.qid for r in records if not r.labeled]
    if unlabeled:
        raise ValueError(f"{path}: {len(unlabeled)} queries have no labels (the test split?), e.g. qid "
                         f"{unlabeled[0]}; they cannot be scored here")
    if not records:
        raise ValueError(f"{path}: no annotated queries")
    return {r.qid: r for r in records}


def score_submission(subs: dict[str, Submission], truth: dict[str, Record]) -> dict:
    """metrics.json content: the scorer's brief keys (percent, 2 decimals), `n`, `missing` and `missing_qids`."""
    unknown = [q for q in subs if q not in truth]
    if unknown:
        raise ValueError(f"{len(unknown)} predicted qids are not in the annotations, e.g. {unknown[:3]}")
    missing = [q for q in truth if q not in subs]
    first = next(iter(subs.values()))
    metrics: dict = {}
    if first.windows is not None:
        mr = moment_retrieval({q: r.windows for q, r in truth.items()},
                              {q: s.windows for q, s in subs.items()})
        metrics.update(sorted((k, v) for k, v in mr.items() if not k.endswith("-n")))  # the scorer sorts its keys
        metrics["by_length_n"] = {k.split("-")[1]: v for k, v in mr.items() if k.endswith("-n")}
    if first.saliency is not None:
        labels = {q: clip_labels(r.duration, r.clip_ids, r.saliency) for q, r in truth.items()}
        metrics.update(highlight_detection(labels, {q: s.saliency for q, s in subs.items()}))
    metrics.update({"n": len(truth), "missing": len(missing), "missing_qids": missing[:MISSING_LISTED],
                    "scoring": "qvhighlights", "missing_rule": "a query without a prediction scores 0 (a miss)"})
    return metrics
