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
from array import array
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

from eval.metrics import Event, dvc_metrics, temporal_iou, vtimellm_iou
from eval.parse import dense_caption_events, parse_grounding
from eval.prediction_formats import EXPECTED, from_vtimellm_log, whole_file_json
from eval.score_stream import Matcher, RunningGrounding, Truth, missing_from, unique_videos, video_truth
from manifests.jsonstream import check_annotation_size
from pipeline.contract.queries import BENCHMARKS

SUFFIX_DATASET = {".txt": "charades", ".json": "activitynet"}
SCORING = "vtimellm"
MISSING_LISTED = 20
"""How many missing queries (videos) metrics.json names; the count is always there."""
LENIENT_RULES = {
    "grounding": "IoU of the spans in seconds, not rounded (headline: VTimeLLM's IoU of fractions, 2 decimals)",
    "dvc": "plain-text 'From ss to ee, caption.' answers are read too (headline: VTimeLLM's JSON layout only)",
}


def _jsonl_head(path: str | Path) -> bool:
    """True when the file's first line is a whole prediction object: JSONL, read line by line (a JSON document is
    only read whole when it is one, e.g. a TimeChat-style list)."""
    with open(path, errors="replace") as f:
        for raw in f:
            if raw.strip():
                try:
                    first = json.loads(raw)
                except json.JSONDecodeError:
                    return False
                return isinstance(first, dict) and bool({"video", "video_id"} & set(first))
    return False


def _raw_lines(path: str | Path) -> Iterator[tuple[int, object]]:
    whole = None if _jsonl_head(path) else whole_file_json(check_annotation_size(path))  # held whole: capped
    if whole is None:
        with open(path, errors="replace") as f:
            yield from enumerate(f, 1)
    else:
        yield from enumerate(whole, 1)


def iter_predictions(path: str | Path, benchmark: str) -> Iterator[dict]:
    """Predictions (our JSONL, VTimeLLM's log, a TimeChat-style JSON: eval.prediction_formats), one dict at a time;
    a malformed line stops with its line number and the shapes accepted (nothing is guessed)."""
    wanted = "span" if benchmark == "grounding" else "events"
    count = 0
    for lineno, raw in _raw_lines(path):
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
        if "answer" not in line and wanted not in line:
            raise ValueError(f"{path}:{lineno}: a {benchmark} prediction needs 'answer' or '{wanted}'; {EXPECTED}")
        count += 1
        yield line
    if not count:
        raise ValueError(f"{path}: no predictions; {EXPECTED}")


def read_predictions(path: str | Path, benchmark: str) -> list[dict]:
    """All predictions at once (small files, tests); `vtl-eval score` streams `iter_predictions`."""
    return list(iter_predictions(path, benchmark))


def read_truth(annotations: str | Path, dataset: str | None = None, durations: str | Path | None = None
               ) -> dict[str, Truth]:
    """Ground truth by video id (both the source id and the manifest key) from annotations or a manifest, its events
    held compactly (`eval.truth`)."""
    from eval import truth

    return truth.read_truth(annotations, dataset, durations, Truth, SUFFIX_DATASET)


def _span(value, vid: str) -> tuple[float, float]:
    try:
        start, end = (float(x) for x in value)
    except (TypeError, ValueError):
        raise ValueError(f"video {vid!r}: a span must be [start_s, end_s], got {value!r}") from None
    return start, end


def grounding_record(line: dict, matcher: Matcher) -> dict:
    """One query: video, sentence, duration, raw answer (None for a span line), ground-truth span, predicted span
    (None = unparsable), `iou` (VTimeLLM's) and `iou_seconds` (the lenient reading)."""
    vid, sent, t, gt = matcher.match(line)
    if "answer" in line:
        pos = parse_grounding(str(line["answer"]), t.time)
        # the default format: a/100·D and a/100, VTimeLLM's operations (TimeFormat keeps their order)
        span = t.time.grounding_span(pos[0], pos[1], t.duration) if pos else None
        frac = (t.time.fraction(pos[0], t.duration), t.time.fraction(pos[1], t.duration)) if pos else None
    else:
        span = _span(line["span"], vid) if line["span"] is not None else None
        frac = (span[0] / t.duration, span[1] / t.duration) if span else None
    gt_frac = (gt[0] / t.duration, gt[1] / t.duration)
    return {"video": vid, "sentence": sent, "duration": t.duration, "answer": line.get("answer"),
            "gt": list(gt), "span": list(span) if span else None,
            "iou": vtimellm_iou(frac, gt_frac) if frac else None,
            "iou_seconds": temporal_iou(span, gt) if span else None}


def grounding_records(preds: Iterable[dict], truth: dict[str, Truth]) -> list[dict]:
    """`grounding_record` of every prediction (small sets, tests)."""
    matcher = Matcher(truth)
    return [grounding_record(line, matcher) for line in preds]


def _dvc_events(line: dict, vid: str, t: Truth, plain_text: bool) -> list[Event] | None:
    if "answer" in line:
        return dense_caption_events(str(line["answer"]), t.duration, plain_text, t.time)
    try:
        return [(_span(e["span"], vid), str(e["sentence"])) for e in line["events"]]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"video {vid!r}: events must be [{{'span': [s, e], 'sentence': T}}, ...] "
                         f"({exc!r})") from None


def _dvc_collect(preds: Iterable[dict], truth: dict[str, Truth], readings: tuple[bool, ...]
                 ) -> tuple[list[dict], list[int], list[str]]:
    """One pass over the predictions: per reading (plain_text flag), the predicted events by video and the number of
    unparsable answers; and the videos whose answer gave no events in the first reading (rule D6)."""
    events: list[dict[str, list[Event]]] = [{} for _ in readings]
    unparsed = [0] * len(readings)
    unparsable: list[str] = []
    for line in preds:
        vid, t = str(line["video"]), video_truth(truth, line)
        if vid in events[0]:
            raise ValueError(f"two dense-captioning predictions for video {vid!r}")
        for k, plain_text in enumerate(readings):
            parsed = _dvc_events(line, vid, t, plain_text)
            unparsed[k] += parsed is None
            events[k][vid] = parsed or []
        if "answer" in line and not events[0][vid]:  # a span line may list none
            unparsable.append(vid)
    return events, unparsed, unparsable


def dvc_inputs(preds: Iterable[dict], truth: dict[str, Truth], plain_text: bool = False) -> tuple[dict, dict, int]:
    """(predicted events by video, ground truth by video, number of unparsable answers); `plain_text` = the lenient
    reading of answers (VTimeLLM's: JSON only)."""
    (events,), (unparsed,), _ = _dvc_collect(preds, truth, (plain_text,))
    return events, {vid: list(truth[vid].events) for vid in events}, unparsed


def missing_queries(records: list[dict], truth: dict[str, Truth]) -> list[list[str]]:
    """[video, sentence] of every ground-truth event no grounding prediction was matched to, in annotation order."""
    return missing_from(Counter((id(truth[r["video"]]), r["sentence"]) for r in records), truth)


def missing_videos(predicted: dict, truth: dict[str, Truth]) -> list[str]:
    """Videos of the annotations with no dense-captioning prediction (under any of their ids)."""
    done = {id(truth[v]) for v in predicted}
    return [vid for key, (vid, _) in unique_videos(truth).items() if key not in done]


def _with_missing(metrics: dict, missing: list, what: str) -> dict:
    """The missing count (and the first ones) beside the figures, which are over the predicted queries only."""
    return {**metrics, "missing": len(missing), f"missing_{what}": missing[:MISSING_LISTED],
            "missing_rule": f"figures are over the predicted {what} only; missing ones are counted, not scored"}


def _with_lenient(benchmark: str, metrics: dict, lenient: dict) -> dict:
    return {**metrics, "scoring": SCORING, "lenient": {"rules": LENIENT_RULES[benchmark], **lenient}}


def score(benchmark: str, preds: Iterable[dict], truth: dict[str, Truth], keep_records: int | None = None
          ) -> tuple[dict, dict]:
    """(metrics.json content, figure data for `eval.figures.write_figures`) for one benchmark: VTimeLLM's figures, and
    the lenient ones under `lenient`. `preds` is read once, as it comes (a file's lines are not held). Figure data:
    grounding `ious` (0 for unparsable) and the first `keep_records` per-query `records` (None: all); dvc the
    per-tIoU scores, the predicted `events` and ground truth `gts` by video, their `durations` and the `unparsable`
    videos."""
    if benchmark == "grounding":
        matcher, head, loose = Matcher(truth), RunningGrounding(2), RunningGrounding(None)
        ious, records = array("d"), []  # 8 bytes a query, for the histogram
        for line in preds:
            r = grounding_record(line, matcher)
            head.add(r["iou"])
            loose.add(r["iou_seconds"])
            ious.append(r["iou"] or 0.0)
            if keep_records is None or len(records) < keep_records:
                records.append(r)
        metrics = _with_missing(head.metrics(), matcher.missing(), "queries")
        return _with_lenient(benchmark, metrics, loose.metrics()), {"ious": ious, "records": records}
    if benchmark == "dvc":
        (events, loose), (unparsed, loose_unparsed), unparsable = _dvc_collect(preds, truth, (False, True))
        gts = {vid: list(truth[vid].events) for vid in events}
        details: dict = {}
        metrics = dvc_metrics(events, gts, unparsed=unparsed, details=details)
        # Scored again only when the lenient reading found more (METEOR runs are the cost).
        lenient = metrics if loose == events else dvc_metrics(loose, gts, unparsed=loose_unparsed)
        metrics = _with_missing(metrics, missing_videos(events, truth), "videos")
        return _with_lenient(benchmark, metrics, lenient), {
            **details, "events": events, "gts": gts, "durations": {v: truth[v].duration for v in events},
            "unparsable": unparsable}
    raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
