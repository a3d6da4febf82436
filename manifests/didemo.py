"""DiDeMo (LocalizingMoments `{train,val,test}_data.json`): queries whose `times` are 5-second segment indices.

Each query has one `[a, b]` pair per annotator (segments 0–5 of the first 30 s; `num_segments` says how many of the
six the video has). The rule applied here, documented in docs/manifests.md:
- the query's span is the **most common pair** among its annotators (the consensus the LocalizingMoments evaluation
  builds on); a tie goes to the tied pair with the largest summed IoU against all annotators' pairs (the pair the
  others agree with most), then to the earliest pair; tied queries are flagged `annotator_tie`;
- pair `[a, b]` covers seconds `[5a, 5(b+1)]`;
- the window is `[0, 5·num_segments]` of the file (capped at 30 s, and at the real length when `--durations` gives
  one); spans are clamped to it (flag `event_clamped_to_window`).
Queries are grouped by video: one row per video, events = its queries in file order.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

from manifests.common import (
    DEFAULT_VIDEO_EXTS,
    NO_USABLE_EVENTS,
    UNPARSABLE,
    check_events,
    count_event_stats,
    read_durations,
    resolve_named,
)
from manifests.jsonstream import expect_array
from manifests.schema import Event, ManifestRow, ReadResult, Rejection, make_key

DATASET = "didemo"
SEGMENT_S = 5.0
MAX_SEGMENTS = 6
TIE = "annotator_tie"
CLAMPED = "event_clamped_to_window"


def _iou(p: tuple[int, int], q: tuple[int, int]) -> float:
    inter = min(p[1], q[1]) + 1 - max(p[0], q[0])
    union = max(p[1], q[1]) + 1 - min(p[0], q[0])
    return max(inter, 0) / union


def consensus(times: list[list[int]]) -> tuple[tuple[int, int], bool]:
    """The segment pair the annotators agree on, and whether the top count was tied (see the module docstring)."""
    pairs = [(int(a), int(b)) for a, b in times]
    if not pairs:
        raise ValueError("no annotator times")
    counts = Counter(pairs)
    top = max(counts.values())
    tied = sorted(p for p, n in counts.items() if n == top)
    if len(tied) == 1:
        return tied[0], False
    best = max(tied, key=lambda p: (sum(_iou(p, q) for q in pairs), -p[0], -p[1]))
    return best, True


def _resolve(media_root: str | Path | None, video: str) -> str:
    """The published file name (`.m4v`/`.mov`/...) or, when only a converted copy exists, `{stem}.mp4|.mkv|.webm`."""
    path = resolve_named(media_root, video)
    if media_root is None or Path(path).is_file():
        return path
    for ext in DEFAULT_VIDEO_EXTS:
        alt = Path(media_root) / (Path(video).stem + ext)
        if alt.is_file():
            return str(alt)
    return path


def _window_end(video: str, num_segments: int, lengths: dict[str, float]) -> float:
    end = SEGMENT_S * min(num_segments, MAX_SEGMENTS)
    real = lengths.get(video, lengths.get(Path(video).stem))
    return min(end, real) if real is not None else end


def _group(data: Iterable, result: ReadResult) -> dict[str, list[tuple[int, dict]]]:
    groups: dict[str, list[tuple[int, dict]]] = {}
    for i, q in enumerate(data):
        result.stats["queries_in"] += 1
        if not isinstance(q, dict) or not isinstance(q.get("video"), str) or not q.get("times"):
            result.rejected.append(Rejection(f"query{i}", UNPARSABLE, "needs `video`, `times`, `description`"))
            continue
        kept = {k: q[k] for k in ("times", "description", "num_segments") if k in q}  # not the record's other fields
        groups.setdefault(q["video"], []).append((i, kept))
    return groups


def _video_row(video: str, queries: list[tuple[int, dict]], lengths: dict[str, float],
               media_root: str | Path | None, result: ReadResult) -> ManifestRow | None:
    flags: set[str] = set()
    num_segments = max(int(q.get("num_segments", MAX_SEGMENTS)) for _, q in queries)
    w_end = _window_end(video, num_segments, lengths)
    events = []
    for i, q in queries:
        try:
            (a, b), tied = consensus(q["times"])
            caption = str(q["description"]).strip()
        except (KeyError, TypeError, ValueError) as exc:
            result.rejected.append(Rejection(f"query{i}", UNPARSABLE, f"{type(exc).__name__}: {exc}"))
            continue
        start, end = SEGMENT_S * a, SEGMENT_S * (b + 1)
        if end > w_end:
            end, flags = w_end, flags | {CLAMPED}
        if tied:
            flags.add(TIE)
            result.stats["queries_tied"] += 1
        events.append(Event(start, end, caption))
    kept, more = check_events(events, w_end, video, result)
    if not kept or w_end <= 0:
        result.rejected.append(Rejection(video, NO_USABLE_EVENTS, f"{len(queries)} queries, none usable"))
        return None
    return ManifestRow(key=make_key(Path(video).stem), dataset=DATASET, kind="video",
                       media=_resolve(media_root, video), window=(0.0, w_end), duration=w_end,
                       events=tuple(kept), source_id=video, flags=tuple(sorted(flags | more)))


def read_didemo(annotations: str | Path, durations: str | Path | None = None,
                media_root: str | Path | None = None) -> ReadResult:
    lengths = read_durations(durations) if durations is not None else {}
    result = ReadResult(stats={"queries_in": 0, "queries_tied": 0})
    with open(annotations) as f:  # streamed: a query at a time, never the whole file's objects (issue 32)
        groups = _group(expect_array(f, annotations, "a list of queries with `video`, `times`, `description`"),
                        result)
    result.stats["videos_in"] = len(groups)
    for video in sorted(groups):
        row = _video_row(video, groups[video], lengths, media_root, result)
        if row is not None:
            result.rows.append(row)
    count_event_stats(result)
    return result
