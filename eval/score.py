"""Scoring predictions against ground truth: `vtl-eval score` and the last step of `vtl-eval grounding|dvc`.

Predictions are JSONL, one query a line: `{"video": ID, "query": TEXT, "answer": RAW_TEXT}` (parsed with
`eval.parse`), or, without `answer`, `{"video", "query", "span": [s, e]}` (grounding) /
`{"video", "events": [{"span": [s, e], "sentence": T}]}` (dvc) in seconds. When a line has `answer`, the answer is
what is scored. Ground truth comes from any annotation file the manifest readers accept (or a manifest Parquet):
a grounding line is matched to the event of its video whose sentence equals the query's sentence (the text inside
"During which frames can we see …?", or the line's `sentence`), lower-cased, final period removed; repeated
sentences of one video are matched in file order. Spans are scored as published (ends past the duration included).

Queries (dvc: videos) of the annotations that no prediction answers are not scored: the figures are over the
predicted ones, as VTimeLLM's scorer scores the lines of its log (and `--limit` runs score a part), but
`metrics.json` carries their count (`missing`, the first ones in `missing_queries` / `missing_videos`) and the CLI
prints a warning line. (QVHighlights, `eval.qvhighlights`, counts them as misses: its scorer requires every query.)

Scoring is VTimeLLM's (`vtimellm/eval/eval.py`, `metric.py`): grounding IoU of fractions rounded to 2 decimals, dense
captions read from the JSON layout only (anything else is an empty prediction). The lenient reading is reported
beside it, never mixed in: `metrics.json` = VTimeLLM's figures at the top level, `"scoring": "vtimellm"`, and
`"lenient": {"rules": ..., figures}` (grounding: IoU in seconds, not rounded; dvc: plain-text answers read too).
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

from eval.metrics import Event, dvc_metrics, grounding_metrics, temporal_iou, vtimellm_iou
from eval.parse import dense_caption_events, parse_grounding
from eval.prediction_formats import EXPECTED, from_vtimellm_log, whole_file_json
from pipeline.contract.queries import BENCHMARKS, normalize_sentence, query_sentence
from pipeline.contract.timing import DEFAULT_TIME_FORMAT, TimeFormat

SUFFIX_DATASET = {".txt": "charades", ".json": "activitynet"}
SCORING = "vtimellm"
MISSING_LISTED = 20
"""How many missing queries (videos) metrics.json names; the count is always there."""
LENIENT_RULES = {
    "grounding": "IoU of the spans in seconds, not rounded (headline: VTimeLLM's IoU of fractions, 2 decimals)",
    "dvc": "plain-text 'From ss to ee, caption.' answers are read too (headline: VTimeLLM's JSON layout only)",
}


def line_sentence(line: dict) -> str:
    """The sentence a grounding prediction asks about (its `sentence`, else parsed out of `query`)."""
    if line.get("sentence"):
        return normalize_sentence(line["sentence"])
    return query_sentence(str(line.get("query", "")))


@dataclass(frozen=True)
class Truth:
    """One video's ground truth: its duration (time base of the answers), events in seconds, and the time format its
    answers are read in (the evaluation shards' feature_spec; VTimeLLM's two-digit positions by default)."""

    duration: float
    events: tuple[Event, ...]
    time: TimeFormat = DEFAULT_TIME_FORMAT


def read_predictions(path: str | Path, benchmark: str) -> list[dict]:
    """Predictions (our JSONL, VTimeLLM's log, a TimeChat-style JSON: eval.prediction_formats) → list of dicts; a
    malformed line stops with its line number and the shapes accepted (nothing is guessed)."""
    whole = whole_file_json(path)
    out = []
    if whole is None:
        with open(path, errors="replace") as f:
            raw_lines = list(enumerate(f, 1))
    else:
        raw_lines = [(i, line) for i, line in enumerate(whole, 1)]
    for lineno, raw in raw_lines:
        if isinstance(raw, str):
            if not raw.strip():
                continue
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc}); {EXPECTED}") from None
        line = from_vtimellm_log(raw) if isinstance(raw, dict) and "video_id" in raw and "video" not in raw else raw
        if not isinstance(line, dict) or "video" not in line:
            raise ValueError(f"{path}:{lineno}: a prediction needs a 'video' field; {EXPECTED}")
        wanted = "span" if benchmark == "grounding" else "events"
        if "answer" not in line and wanted not in line:
            raise ValueError(f"{path}:{lineno}: a {benchmark} prediction needs 'answer' or '{wanted}'; {EXPECTED}")
        out.append(line)
    if not out:
        raise ValueError(f"{path}: no predictions; {EXPECTED}")
    return out


def read_truth(annotations: str | Path, dataset: str | None = None, durations: str | Path | None = None
               ) -> dict[str, Truth]:
    """Ground truth by video id (both the source id and the manifest key) from annotations or a manifest."""
    from infra import storage

    if storage.is_remote(annotations):  # never let Path() turn s3://b/x into a local s3:/b/x
        raise storage.StorageError(f"{annotations}: vtl-eval score reads ground truth from a local file; copy it "
                                   f"here first (object-store annotations are not supported by score yet)")
    path = Path(storage.local_path(annotations))
    if path.suffix == ".parquet":
        from manifests.schema import read_manifest

        rows = read_manifest(path)
    else:
        from manifests import read_dataset

        name = dataset or SUFFIX_DATASET.get(path.suffix)
        if name is None:
            raise ValueError(f"cannot tell the dataset of {path}: pass --dataset")
        rows = read_dataset(name, path, durations=durations).rows
    truth: dict[str, Truth] = {}
    for row in rows:
        if not row.duration:
            raise ValueError(f"{row.key}: no duration in the annotations; pass --durations")
        t = Truth(float(row.duration), tuple(((e.start, e.end), e.caption) for e in row.events))
        for vid in dict.fromkeys((row.source_id or row.key, row.key)):  # source id first: the name reports use
            truth[vid] = t
    return truth


def _video(truth: dict[str, Truth], line: dict) -> Truth:
    vid = str(line["video"])
    if vid not in truth:
        raise ValueError(f"prediction for video {vid!r}, which the annotations do not have")
    return truth[vid]


def _span(value, vid: str) -> tuple[float, float]:
    try:
        start, end = (float(x) for x in value)
    except (TypeError, ValueError):
        raise ValueError(f"video {vid!r}: a span must be [start_s, end_s], got {value!r}") from None
    return start, end


def grounding_records(preds: list[dict], truth: dict[str, Truth]) -> list[dict]:
    """Per query: video, sentence, duration, raw answer (None for a span line), ground-truth span, predicted span
    (None = unparsable), `iou` (VTimeLLM's) and `iou_seconds` (the lenient reading)."""
    queues: dict[tuple[str, str], deque] = defaultdict(deque)
    for vid, t in truth.items():
        for span, sentence in t.events:
            queues[(vid, normalize_sentence(sentence))].append(span)
    records = []
    for line in preds:
        t, key = _video(truth, line), (str(line["video"]), line_sentence(line))
        if not queues[key]:
            raise ValueError(f"video {key[0]!r} has no (further) event with the sentence {key[1]!r}")
        gt = queues[key].popleft()
        if "answer" in line:
            pos = parse_grounding(str(line["answer"]), t.time)
            # the default format: a/100·D and a/100, VTimeLLM's operations (TimeFormat keeps their order)
            span = t.time.grounding_span(pos[0], pos[1], t.duration) if pos else None
            frac = (t.time.fraction(pos[0], t.duration), t.time.fraction(pos[1], t.duration)) if pos else None
        else:
            span = _span(line["span"], key[0]) if line["span"] is not None else None
            frac = (span[0] / t.duration, span[1] / t.duration) if span else None
        gt_frac = (gt[0] / t.duration, gt[1] / t.duration)
        records.append({"video": key[0], "sentence": key[1], "duration": t.duration, "answer": line.get("answer"),
                        "gt": list(gt), "span": list(span) if span else None,
                        "iou": vtimellm_iou(frac, gt_frac) if frac else None,
                        "iou_seconds": temporal_iou(span, gt) if span else None})
    return records


def dvc_inputs(preds: list[dict], truth: dict[str, Truth], plain_text: bool = False) -> tuple[dict, dict, int]:
    """(predicted events by video, ground truth by video, number of unparsable answers); `plain_text` = the lenient
    reading of answers (VTimeLLM's: JSON only)."""
    events: dict[str, list[Event]] = {}
    unparsed = 0
    for line in preds:
        vid, t = str(line["video"]), _video(truth, line)
        if vid in events:
            raise ValueError(f"two dense-captioning predictions for video {vid!r}")
        if "answer" in line:
            parsed = dense_caption_events(str(line["answer"]), t.duration, plain_text, t.time)
        else:
            try:
                parsed = [(_span(e["span"], vid), str(e["sentence"])) for e in line["events"]]
            except (KeyError, TypeError) as exc:
                raise ValueError(f"video {vid!r}: events must be [{{'span': [s, e], 'sentence': T}}, ...] "
                                 f"({exc!r})") from None
        unparsed += parsed is None
        events[vid] = parsed or []
    gts = {vid: list(truth[vid].events) for vid in events}
    return events, gts, unparsed


def _unique(truth: dict[str, Truth]) -> dict[int, tuple[str, Truth]]:
    """Each video once (truth holds it under its source id and its manifest key), named by its first id."""
    out: dict[int, tuple[str, Truth]] = {}
    for vid, t in truth.items():
        out.setdefault(id(t), (vid, t))
    return out


def missing_queries(records: list[dict], truth: dict[str, Truth]) -> list[list[str]]:
    """[video, sentence] of every ground-truth event no grounding prediction was matched to, in annotation order."""
    matched: Counter = Counter((id(truth[r["video"]]), r["sentence"]) for r in records)
    out = []
    for key, (vid, t) in _unique(truth).items():
        for _, sentence in t.events:
            sent = normalize_sentence(sentence)
            if matched[(key, sent)] > 0:
                matched[(key, sent)] -= 1
            else:
                out.append([vid, sent])
    return out


def missing_videos(predicted: dict, truth: dict[str, Truth]) -> list[str]:
    """Videos of the annotations with no dense-captioning prediction (under any of their ids)."""
    done = {id(truth[v]) for v in predicted}
    return [vid for key, (vid, _) in _unique(truth).items() if key not in done]


def _with_missing(metrics: dict, missing: list, what: str) -> dict:
    """The missing count (and the first ones) beside the figures, which are over the predicted queries only."""
    return {**metrics, "missing": len(missing), f"missing_{what}": missing[:MISSING_LISTED],
            "missing_rule": f"figures are over the predicted {what} only; missing ones are counted, not scored"}


def _with_lenient(benchmark: str, metrics: dict, lenient: dict) -> dict:
    return {**metrics, "scoring": SCORING, "lenient": {"rules": LENIENT_RULES[benchmark], **lenient}}


def score(benchmark: str, preds: list[dict], truth: dict[str, Truth]) -> tuple[dict, dict]:
    """(metrics.json content, figure data for `eval.figures.write_figures`) for one benchmark: VTimeLLM's figures, and
    the lenient ones under `lenient`. Figure data: grounding `ious` and the per-query `records`; dvc the per-tIoU
    scores, the predicted `events` and ground truth `gts` by video, their `durations` and the `unparsable` videos."""
    if benchmark == "grounding":
        records = grounding_records(preds, truth)
        metrics = grounding_metrics([r["iou"] for r in records])
        lenient = grounding_metrics([r["iou_seconds"] for r in records], decimals=None)
        metrics = _with_missing(metrics, missing_queries(records, truth), "queries")
        return _with_lenient(benchmark, metrics, lenient), {"ious": [r["iou"] for r in records], "records": records}
    if benchmark == "dvc":
        events, gts, unparsed = dvc_inputs(preds, truth)
        details: dict = {}
        metrics = dvc_metrics(events, gts, unparsed=unparsed, details=details)
        loose, _, loose_unparsed = dvc_inputs(preds, truth, plain_text=True)
        # Scored again only when the lenient reading found more (METEOR runs are the cost).
        lenient = metrics if loose == events else dvc_metrics(loose, gts, unparsed=loose_unparsed)
        # An answer that gave no events is unparsable (rule D6); a span line may list none.
        unparsable = [str(x["video"]) for x in preds if "answer" in x and not events[str(x["video"])]]
        metrics = _with_missing(metrics, missing_videos(events, truth), "videos")
        return _with_lenient(benchmark, metrics, lenient), {
            **details, "events": events, "gts": gts, "durations": {v: truth[v].duration for v in events},
            "unparsable": unparsable}
    raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")

