"""Charades-STA (`charades_sta_{train,test}.txt`: `vid start end##sentence`) with durations from the Charades CSV.

Queries are grouped by video: one video row per vid (whole file), events = its queries in file order. The `length`
column of `Charades_v1_{train,test}.csv` (given as `--durations`) is the time base; a video without one is rejected
(`no_duration`), queries ending past it (common: the annotations were made on rounded times) are kept and flagged.
"""
from __future__ import annotations

from pathlib import Path

from manifests.common import (
    NO_DURATION,
    NO_USABLE_EVENTS,
    UNPARSABLE,
    check_events,
    count_event_stats,
    read_durations,
    resolve_video,
)
from manifests.schema import Event, ManifestRow, ReadResult, Rejection, make_key

DATASET = "charades"


def parse_line(line: str) -> tuple[str, Event]:
    """`AO8RW 0.0 6.9##a person is putting a book on a shelf.` → ("AO8RW", Event(0.0, 6.9, "a person ..."))."""
    head, sep, sentence = line.partition("##")
    parts = head.split()
    if not sep or len(parts) != 3 or not sentence.strip():
        raise ValueError("expected `vid start end##sentence`")
    return parts[0], Event(float(parts[1]), float(parts[2]), sentence.strip())


def read_charades(annotations: str | Path, durations: str | Path | None = None,
                  media_root: str | Path | None = None) -> ReadResult:
    if durations is None:
        raise ValueError("charades needs --durations: the Charades CSV whose `length` column gives each video's "
                         "duration (Charades_v1_train.csv / Charades_v1_test.csv)")
    lengths = read_durations(durations)
    result = ReadResult()
    groups: dict[str, list[Event]] = {}
    n_lines = 0
    with open(annotations) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            n_lines += 1
            try:
                vid, event = parse_line(line.rstrip("\n"))
            except ValueError as exc:
                result.rejected.append(Rejection(f"line{lineno}", UNPARSABLE, f"{exc}: {line.strip()[:80]}"))
                continue
            groups.setdefault(vid, []).append(event)
    for vid in sorted(groups):
        events = groups[vid]
        if vid not in lengths:
            result.rejected.append(Rejection(vid, NO_DURATION, f"{len(events)} queries; {vid} not in {durations}"))
            continue
        kept, flags = check_events(events, lengths[vid], vid, result)
        if not kept:
            result.rejected.append(Rejection(vid, NO_USABLE_EVENTS, f"{len(events)} queries, none usable"))
            continue
        result.rows.append(ManifestRow(
            key=make_key(vid), dataset=DATASET, kind="video", media=resolve_video(media_root, vid),
            window=None, duration=lengths[vid], events=tuple(kept), source_id=vid, flags=tuple(sorted(flags))))
    result.stats = {"queries_in": n_lines, "videos_in": len(groups)}
    count_event_stats(result)
    return result
