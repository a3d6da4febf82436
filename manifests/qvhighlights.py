"""QVHighlights (`highlight_{train,val,test}_release.jsonl`): one query a line, moments and per-clip saliency.

A line is `{qid, query, vid, duration, relevant_windows, relevant_clip_ids, saliency_scores}`: `vid` is
`<youtube id>_<start>_<end>` (the 150 s cut of the YouTube video the released `{vid}.mp4` holds, so the media is
`{vid}` under `--media-root`, whole file); `relevant_windows` are [start, end] seconds in that cut;
`relevant_clip_ids` index its 2-second clips (clip i = [2i, 2i + 2) s) and `saliency_scores` give, per relevant clip,
three annotators' scores 0–4 (Very Bad … Very Good). The test split publishes no labels (no `relevant_windows`,
`relevant_clip_ids` or `saliency_scores`): its rows are kept, flagged `unlabeled`, for prediction, but cannot be
scored (the benchmark scores them on its own server).

Manifest rows are videos (`vid`), their events every query's windows in file order with the query as caption. The
saliency labels do not fit the manifest schema; `read_records` gives the whole lines, checked, to the scorer
(`eval.qvhighlights`), so the format is read in this one module.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from manifests.common import (
    BAD_ID,
    DUPLICATE_ID,
    NO_USABLE_EVENTS,
    UNPARSABLE,
    check_events,
    count_event_stats,
    resolve_video,
)
from manifests.schema import Event, ManifestRow, ReadResult, Rejection, make_key

DATASET = "qvhighlights"
CLIP_SECONDS = 2.0
"""Saliency is labelled per 2-second clip; clip i covers [2i, 2i + 2) seconds."""
ANNOTATORS = 3
UNLABELED = "unlabeled"
"""Flag of a row (test split) that has queries but no labels: kept for prediction, never scored."""
LABEL_FIELDS = ("relevant_windows", "relevant_clip_ids", "saliency_scores")


@dataclass(frozen=True)
class Record:
    """One QVHighlights query; `windows`, `clip_ids` and `saliency` are None for an unlabeled (test) line."""

    qid: str
    query: str
    vid: str
    duration: float
    windows: tuple[tuple[float, float], ...] | None = None
    clip_ids: tuple[int, ...] | None = None
    saliency: tuple[tuple[int, ...], ...] | None = None

    @property
    def labeled(self) -> bool:
        return self.windows is not None


def qid_text(value) -> str:
    """qids are integers in the release; submissions sometimes carry them as strings. One text form for matching."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or str(value).strip() == "":
        raise ValueError(f"qid must be an integer or text, got {value!r}")
    return str(value).strip()


def _labels(d: dict, duration: float) -> tuple:
    windows = tuple((float(s), float(e)) for s, e in d["relevant_windows"])
    clip_ids = tuple(int(c) for c in d["relevant_clip_ids"])
    saliency = tuple(tuple(int(x) for x in row) for row in d["saliency_scores"])
    if not windows:
        raise ValueError("no relevant_windows")
    if len(saliency) != len(clip_ids):
        raise ValueError(f"{len(clip_ids)} relevant_clip_ids but {len(saliency)} saliency_scores")
    n_clips = int(duration / CLIP_SECONDS)
    if any(not 0 <= c < n_clips for c in clip_ids) or len(set(clip_ids)) != len(clip_ids):
        raise ValueError(f"relevant_clip_ids must be distinct clips in 0..{n_clips - 1} (duration {duration})")
    if any(len(row) != ANNOTATORS or not all(0 <= x <= 4 for x in row) for row in saliency):
        raise ValueError(f"saliency_scores must be {ANNOTATORS} scores 0–4 per relevant clip")
    return windows, clip_ids, saliency


def parse_record(d: dict) -> Record:
    """One JSONL line → Record; a line with some but not all of the label fields is an error, not unlabeled."""
    if not isinstance(d, dict):
        raise ValueError("a line must be a JSON object")
    qid, query, vid = qid_text(d.get("qid")), d.get("query"), d.get("vid")
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"query {query!r}")
    if not isinstance(vid, str) or not vid.strip():
        raise ValueError(f"vid {vid!r}")
    duration = float(d["duration"])
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration {duration!r}")
    present = [f for f in LABEL_FIELDS if d.get(f) is not None]
    if not present:
        return Record(qid, query.strip(), vid, duration)
    if len(present) != len(LABEL_FIELDS):
        raise ValueError(f"has {present} but not {sorted(set(LABEL_FIELDS) - set(present))}")
    return Record(qid, query.strip(), vid, duration, *_labels(d, duration))


def read_records(path: str | Path, result: ReadResult | None = None) -> list[Record]:
    """Every usable line of a QVHighlights JSONL; a bad line is a rejection in `result` (or an error naming the
    line when there is none), a repeated qid keeps its first line."""
    records: list[Record] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = parse_record(json.loads(line))
            except KeyError as exc:
                _reject(result, path, lineno, UNPARSABLE, f"no field {exc}")
                continue
            except (TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
                _reject(result, path, lineno, UNPARSABLE, f"{type(exc).__name__}: {exc}")
                continue
            if rec.qid in seen:
                _reject(result, path, lineno, DUPLICATE_ID, f"qid {rec.qid} again; its first line kept")
                continue
            seen.add(rec.qid)
            records.append(rec)
    return records


def _reject(result: ReadResult | None, path, lineno: int, reason: str, detail: str) -> None:
    if result is None:
        raise ValueError(f"{path}:{lineno}: {reason}: {detail}")
    result.rejected.append(Rejection(f"line{lineno}", reason, detail))


def read_qvhighlights(annotations: str | Path, durations: str | Path | None = None,
                      media_root: str | Path | None = None) -> ReadResult:
    if durations is not None:
        raise ValueError("qvhighlights takes durations from its annotation lines; --durations is not used")
    result = ReadResult()
    records = read_records(annotations, result)
    by_vid: dict[str, list[Record]] = {}
    for rec in records:
        by_vid.setdefault(rec.vid, []).append(rec)
    for vid, recs in by_vid.items():
        try:
            key = make_key(vid)
        except ValueError:
            result.rejected.append(Rejection(vid, BAD_ID, f"vid {vid!r} gives no sample key"))
            continue
        events = [Event(s, e, r.query) for r in recs if r.labeled for s, e in r.windows]
        kept, flags = check_events(events, recs[0].duration, vid, result)
        if events and not kept:
            result.rejected.append(Rejection(vid, NO_USABLE_EVENTS, f"{len(events)} windows, none usable"))
            continue
        if not all(r.labeled for r in recs):
            flags.add(UNLABELED)
        result.rows.append(ManifestRow(key=key, dataset=DATASET, kind="video", media=resolve_video(media_root, vid),
                                       window=None, duration=recs[0].duration, events=tuple(kept), source_id=vid,
                                       flags=tuple(sorted(flags))))
    result.stats = {"queries_in": len(records), "queries_unlabeled": sum(not r.labeled for r in records),
                    "videos_in": len(by_vid)}
    count_event_stats(result)
    return result
