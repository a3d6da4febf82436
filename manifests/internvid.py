"""InternVid-10M-FLT (`YoutubeID, Start_timestamp, End_timestamp, Caption, ...`, as CSV or JSONL) → stage-2 windows.

Clips are grouped by YoutubeID and passed through the selection rule of `manifests.selection`. Each kept window is
one video row: `media` the original YouTube video (`{YoutubeID}.mp4|.mkv|.webm`), `window` = [first event start,
last event end + WINDOW_END_PAD_S] seconds of that file, `duration` its length, events relative to the window start
(milliseconds, as published), key `{YoutubeID}_{window start in ms}`. Clips with unparsable fields or start ≥ end are rejections;
clips the selection leaves out are counted by reason in `stats` (they are usable data, just not chosen).
"""
from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

from manifests.common import START_NOT_BEFORE_END, UNPARSABLE, resolve_video
from manifests.schema import Event, ManifestRow, ReadResult, Rejection, make_key
from manifests.selection import WINDOWS_OVER_LIMIT, Clip, SelectionRule, select

DATASET = "internvid"
_HMS = re.compile(r"^(\d+):([0-5]?\d):([0-5]?\d(?:\.\d+)?)$")


def parse_time(text: str | float | int) -> float:
    """`"00:02:09.800"` → 129.8; plain numbers are taken as seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = _HMS.match(str(text).strip())
    if m is None:
        return float(str(text).strip())
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def iter_records(path: str | Path) -> Iterator[tuple[int, dict | None]]:
    """(line number, record) from a CSV with a header or from JSONL; an unparsable JSON line gives None."""
    path = Path(path)
    with open(path, newline="") as f:
        if path.suffix.lower() == ".csv":
            for i, row in enumerate(csv.DictReader(f), 2):
                yield i, row
            return
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = None
            yield i, rec if isinstance(rec, dict) else None


def _parse(rec: dict | None) -> tuple[str, Clip]:
    if rec is None:
        raise ValueError("not a JSON object")
    vid = str(rec["YoutubeID"]).strip()
    clip = Clip(parse_time(rec["Start_timestamp"]), parse_time(rec["End_timestamp"]), str(rec["Caption"]).strip())
    if not vid or not clip.caption:
        raise ValueError("empty YoutubeID or Caption")
    return vid, clip


def _group(path: str | Path, result: ReadResult) -> dict[str, list[Clip]]:
    groups: dict[str, list[Clip]] = {}
    n = 0
    for lineno, rec in iter_records(path):
        n += 1
        try:
            vid, clip = _parse(rec)
        except (KeyError, TypeError, ValueError) as exc:
            result.rejected.append(Rejection(f"line{lineno}", UNPARSABLE, f"{type(exc).__name__}: {exc}"))
            continue
        if not clip.start < clip.end:
            result.rejected.append(Rejection(f"{vid}@line{lineno}", START_NOT_BEFORE_END,
                                             f"[{clip.start}, {clip.end}]: {clip.caption[:60]}"))
            continue
        groups.setdefault(vid, []).append(clip)
    result.stats["clips_in"] = n
    return groups


WINDOW_END_PAD_S = 1.0
"""Seconds the window runs past its last event. VTimeLLM's one documented stage-2 record (docs/data.md: split
[129.8, 184.0], duration 54.2, first event at 0, last event ending at 53.2) ends its window 1 s after the last event,
so that event renders "98", not the "99" a window cut at the event would always give. Past the end of the file the
extractor clamps to the last frame, as VTimeLLM's does; the duration stays the window's, as its meta.duration does."""


def window_row(vid: str, window: list[Clip], media_root: str | Path | None) -> ManifestRow:
    w0, w1 = window[0].start, round(window[-1].end + WINDOW_END_PAD_S, 3)
    events = tuple(Event(round(c.start - w0, 3), round(c.end - w0, 3), c.caption) for c in window)
    return ManifestRow(key=make_key(f"{vid}_{round(w0 * 1000)}"), dataset=DATASET, kind="video",
                       media=resolve_video(media_root, vid), window=(w0, w1), duration=round(w1 - w0, 3),
                       events=events, source_id=vid)


def read_internvid(annotations: str | Path, durations: str | Path | None = None,
                   media_root: str | Path | None = None, **thresholds) -> ReadResult:
    if durations is not None:
        raise ValueError("internvid windows carry their own durations; --durations is not used")
    rule = SelectionRule(**thresholds)
    result = ReadResult()
    groups = _group(annotations, result)
    not_selected: Counter = Counter()
    no_window: Counter = Counter()
    for vid in sorted(groups):
        windows, dropped, why = select(groups[vid], rule)
        not_selected.update(dropped)
        if why:
            no_window[why] += 1
        result.rows.extend(window_row(vid, w, media_root) for w in windows)
    result.stats.update({
        "videos_in": len(groups), "clips_rejected": len(result.rejected),
        "videos_kept": len(groups) - sum(no_window.values()), "videos_without_window": dict(sorted(no_window.items())),
        "windows_kept": len(result.rows), "events_kept": sum(len(r.events) for r in result.rows),
        "windows_over_video_limit": not_selected.pop(WINDOWS_OVER_LIMIT, 0),
        "events_not_selected": dict(sorted(not_selected.items())), "rule": asdict(rule),
    })
    return result
