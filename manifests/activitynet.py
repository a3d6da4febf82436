"""ActivityNet Captions (`train.json`, `val_1.json`, `val_2.json`): `{vid: {duration, timestamps, sentences}}`.

One video row per vid, the whole file (`window` None), `duration` as published, one event per (timestamp, sentence)
pair with the sentence stripped (the published sentences carry leading spaces). Events with start ≥ end are rejected
one by one; events ending past the duration are kept as published and the row is flagged. Under `--media-root` the
file is `{vid}` or, as many mirrors name it, the bare YouTube id without `v_`, with .mp4, .mkv or .webm.
"""
from __future__ import annotations

import json
from pathlib import Path

from manifests.common import NO_USABLE_EVENTS, UNPARSABLE, check_events, count_event_stats, resolve_video
from manifests.schema import Event, ManifestRow, ReadResult, Rejection, make_key

DATASET = "activitynet"


def _parse_events(vid: str, entry: dict) -> tuple[float, list[Event]]:
    duration = float(entry["duration"])
    timestamps, sentences = entry["timestamps"], entry["sentences"]
    if len(timestamps) != len(sentences):
        raise ValueError(f"{len(timestamps)} timestamps but {len(sentences)} sentences")
    events = [Event(float(s), float(e), str(t).strip()) for (s, e), t in zip(timestamps, sentences)]
    return duration, events


def _without_prefix(vid: str) -> tuple[str, ...]:
    """Many ActivityNet mirrors name files by the bare YouTube id, without the annotations' `v_` prefix."""
    return (vid[2:],) if vid.startswith("v_") and len(vid) > 2 else ()


def read_activitynet(annotations: str | Path, durations: str | Path | None = None,
                     media_root: str | Path | None = None) -> ReadResult:
    if durations is not None:
        raise ValueError("activitynet takes durations from its annotation file; --durations is not used")
    with open(annotations) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{annotations}: expected an object {{video id: {{duration, timestamps, sentences}}}}")
    result = ReadResult()
    for vid in sorted(data):
        try:
            duration, events = _parse_events(vid, data[vid])
        except (KeyError, TypeError, ValueError) as exc:
            result.rejected.append(Rejection(vid, UNPARSABLE, f"{type(exc).__name__}: {exc}"))
            continue
        kept, flags = check_events(events, duration, vid, result)
        if not kept:
            result.rejected.append(Rejection(vid, NO_USABLE_EVENTS, f"{len(events)} published events, none usable"))
            continue
        result.rows.append(ManifestRow(
            key=make_key(vid), dataset=DATASET, kind="video",
            media=resolve_video(media_root, vid, alt_stems=_without_prefix(vid)), window=None, duration=duration, events=tuple(kept), source_id=vid, flags=tuple(sorted(flags))))
    result.stats = {"videos_in": len(data)}
    count_event_stats(result)
    return result
