"""InternVid-10M-FLT (`YoutubeID, Start_timestamp, End_timestamp, Caption, ...`, as CSV or JSONL) → stage-2 windows.

Clips are grouped by YoutubeID (contiguous clips of a video; see OPEN_VIDEOS for input that is not) and passed through the selection rule of `manifests.selection`. Each kept window is
one video row: `media` the original YouTube video (`{YoutubeID}.mp4|.mkv|.webm`), `window` = [first event start,
last event end + WINDOW_END_PAD_S] seconds of that file, `duration` its length, events relative to the window start
(milliseconds, as published), key `{YoutubeID}_{window start in ms}`. Clips with unparsable fields or start ≥ end are rejections;
clips the selection leaves out are counted by reason in `stats` (they are usable data, just not chosen).
"""
from __future__ import annotations

import csv
import json
import re
from array import array
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

from manifests.common import START_NOT_BEFORE_END, UNPARSABLE, resolve_video
from manifests.schema import Event, ManifestRow, ReadResult, Rejection, collect, make_key
from manifests.selection import WINDOWS_OVER_LIMIT, Clip, SelectionRule, select
from manifests.writer import key_hash

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


OPEN_VIDEOS = 1024
"""Videos whose clips are gathered at once. InternVid lists a video's clips together; a video is closed (its windows
selected and written) once this many other videos have had a clip since its last one. A clip of a closed video starts
a new group for it, selected on its own (its windows may repeat keys, which `unique_keys` suffixes) and counted in
`stats["video_groups_split"]`: sort such a file by YoutubeID first to read it as one group per video."""


def _clips(path: str | Path, stats: dict) -> Iterator[tuple[str, Clip] | Rejection]:
    """(YoutubeID, clip) per usable line, a Rejection per unusable one; counts `clips_in`."""
    stats["clips_in"] = 0
    for lineno, rec in iter_records(path):
        stats["clips_in"] += 1
        try:
            vid, clip = _parse(rec)
        except (KeyError, TypeError, ValueError) as exc:
            yield Rejection(f"line{lineno}", UNPARSABLE, f"{type(exc).__name__}: {exc}")
            continue
        if not clip.start < clip.end:
            yield Rejection(f"{vid}@line{lineno}", START_NOT_BEFORE_END, f"[{clip.start}, {clip.end}]: {clip.caption[:60]}")
            continue
        yield vid, clip


def _groups(path: str | Path, stats: dict, open_videos: int) -> Iterator[tuple[str, list[Clip]] | Rejection]:
    """(YoutubeID, its clips) per group, by the rule of OPEN_VIDEOS; the groups still open at the end come sorted by
    YoutubeID (with up to OPEN_VIDEOS videos that is the whole output, in the order the reader always gave)."""
    buffer: dict[str, list[Clip]] = {}
    for item in _clips(path, stats):
        if isinstance(item, Rejection):
            yield item
            continue
        vid, clip = item
        clips = buffer.pop(vid, None) or []
        clips.append(clip)
        buffer[vid] = clips  # re-inserted: the dict's order is the order of last use
        if len(buffer) > open_videos:
            oldest = next(iter(buffer))
            yield oldest, buffer.pop(oldest)
    for vid in sorted(buffer):
        yield vid, buffer.pop(vid)


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


def stream_internvid(annotations: str | Path, durations: str | Path | None = None,
                     media_root: str | Path | None = None, *, stats: dict,
                     open_videos: int = OPEN_VIDEOS, **thresholds) -> Iterator[ManifestRow | Rejection]:
    """Rows and rejections as the file is read; `stats` is complete once the iterator is exhausted."""
    if durations is not None:
        raise ValueError("internvid windows carry their own durations; --durations is not used")
    rule = SelectionRule(**thresholds)
    not_selected: Counter = Counter()
    no_window: Counter = Counter()
    seen = array("q")  # 8 bytes per group: how many videos came in more than one group, counted at the end
    rejected = windows_kept = events_kept = 0
    for item in _groups(annotations, stats, open_videos):
        if isinstance(item, Rejection):
            rejected += 1
            yield item
            continue
        vid, clips = item
        seen.append(key_hash(vid))
        windows, dropped, why = select(clips, rule)
        not_selected.update(dropped)
        if why:
            no_window[why] += 1
        for w in windows:
            row = window_row(vid, w, media_root)
            windows_kept += 1
            events_kept += len(row.events)
            yield row
    videos = _distinct(seen)
    stats.update({
        "videos_in": videos, "clips_rejected": rejected,
        "videos_kept": len(seen) - sum(no_window.values()), "videos_without_window": dict(sorted(no_window.items())),
        "windows_kept": windows_kept, "events_kept": events_kept,
        "windows_over_video_limit": not_selected.pop(WINDOWS_OVER_LIMIT, 0),
        "events_not_selected": dict(sorted(not_selected.items())), "rule": asdict(rule),
    })
    if len(seen) != videos:
        stats["video_groups_split"] = len(seen) - videos


def _distinct(hashes: array) -> int:
    import numpy as np

    return int(len(np.unique(np.frombuffer(hashes, dtype=np.int64))))


def read_internvid(annotations: str | Path, durations: str | Path | None = None,
                   media_root: str | Path | None = None, **thresholds) -> ReadResult:
    stats: dict = {}
    return collect(stream_internvid(annotations, durations, media_root, stats=stats, **thresholds), stats)
