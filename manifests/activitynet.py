"""ActivityNet Captions (`train.json`, `val_1.json`, `val_2.json`): `{vid: {duration, timestamps, sentences}}`.

One video row per vid, the whole file (`window` None), `duration` as published, one event per (timestamp, sentence)
pair with the sentence stripped (the published sentences carry leading spaces); an event whose sentence is not
text (null) is rejected, not read as "None". An id given twice keeps its first entry, the later ones are rejected as
`duplicate_id`; an empty id is one rejection (`bad_id`), not the end of the file. Events with start ≥ end are rejected
one by one; events ending past the duration are kept as published and the row is flagged. Under `--media-root` the
file is `{vid}` or, as many mirrors name it, the bare YouTube id without `v_`, with .mp4, .mkv or .webm. The file is
read entry by entry (`manifests.jsonstream`) and rows come in file order.

YouCook2 as PDVC lays it out (`yc2_train.json`, `yc2_val.json`) is the same object, read by this reader under the
name `youcook2` (rows say `dataset: youcook2`). What differs: ids are bare YouTube ids (no `v_`), timestamps are whole
seconds, sentences are lower-case without a final period or leading space, and entries may carry the original
annotation's `subset` and `recipe_type` (ignored, except that under `--media-root` the released raw-video tree
`{subset}/{recipe_type}/{vid}.mp4` is looked in after `{vid}.mp4`). The test split has no captions and no file here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from manifests.common import (
    BAD_ID,
    DUPLICATE_ID,
    NO_CAPTION,
    NO_USABLE_EVENTS,
    START_NOT_BEFORE_END,
    UNPARSABLE,
    check_events,
    resolve_video,
)
from manifests.jsonstream import iter_object
from manifests.schema import Event, ManifestRow, ReadResult, Rejection, collect, make_key

DATASET = "activitynet"


class _FirstWins(dict):
    """A JSON object whose repeated names are kept out (json.load would keep the last silently) and listed."""

    duplicates: list[str]


def _first_wins(pairs: list[tuple[str, object]]) -> _FirstWins:
    out = _FirstWins()
    out.duplicates = []
    for name, value in pairs:
        if name in out:
            out.duplicates.append(name)
        else:
            out[name] = value
    return out


def _parse_events(vid: str, entry: dict, result: ReadResult) -> tuple[float, list[Event]]:
    """Duration and events; a sentence that is not non-empty text (null, a number) rejects that event."""
    if getattr(entry, "duplicates", None):
        raise ValueError(f"fields given twice: {', '.join(sorted(set(entry.duplicates)))}")
    duration = float(entry["duration"])
    timestamps, sentences = entry["timestamps"], entry["sentences"]
    if len(timestamps) != len(sentences):
        raise ValueError(f"{len(timestamps)} timestamps but {len(sentences)} sentences")
    events = []
    for i, ((s, e), t) in enumerate(zip(timestamps, sentences)):
        if not isinstance(t, str) or not t.strip():
            result.rejected.append(Rejection(f"{vid}#{i}", NO_CAPTION, f"event {i}: sentence {t!r}"))
            continue
        events.append(Event(float(s), float(e), t.strip()))
    return duration, events


def make_key_ok(vid: str) -> bool:
    try:
        make_key(vid)
    except ValueError:
        return False
    return True


def _without_prefix(vid: str) -> tuple[str, ...]:
    """Many ActivityNet mirrors name files by the bare YouTube id, without the annotations' `v_` prefix."""
    return (vid[2:],) if vid.startswith("v_") and len(vid) > 2 else ()


def _alt_stems(vid: str, entry: object) -> tuple[str, ...]:
    """Other names of a video's file: without `v_`; YouCook2's raw-video tree `{subset}/{recipe_type}/{vid}`."""
    stems = _without_prefix(vid)
    if isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("subset", "recipe_type")):
        parts = (entry["subset"], entry["recipe_type"])
        if all(p and p not in (".", "..") and "/" not in p and "\\" not in p for p in parts):
            stems += (f"{parts[0]}/{parts[1]}/{vid}",)
    return stems


def read_youcook2(annotations: str | Path, durations: str | Path | None = None,
                  media_root: str | Path | None = None) -> ReadResult:
    """YouCook2 in PDVC's `yc2_*.json` layout (ActivityNet's): see the module docstring."""
    return _read(annotations, durations, media_root, "youcook2")


def read_activitynet(annotations: str | Path, durations: str | Path | None = None,
                     media_root: str | Path | None = None) -> ReadResult:
    return _read(annotations, durations, media_root, DATASET)


def _read(annotations: str | Path, durations: str | Path | None, media_root: str | Path | None,
          dataset: str) -> ReadResult:
    stats: dict = {}
    return collect(stream_activitynet(annotations, durations, media_root, stats=stats, dataset=dataset), stats)


def stream_youcook2(annotations: str | Path, durations: str | Path | None = None,
                    media_root: str | Path | None = None, *, stats: dict) -> Iterator[ManifestRow | Rejection]:
    return stream_activitynet(annotations, durations, media_root, stats=stats, dataset="youcook2")


def stream_activitynet(annotations: str | Path, durations: str | Path | None = None,
                       media_root: str | Path | None = None, *, stats: dict,
                       dataset: str = DATASET) -> Iterator[ManifestRow | Rejection]:
    """Rows and rejections video by video, in file order (the file is parsed incrementally; the published files
    list their ids sorted); `stats` is complete once the iterator is exhausted. Memory: one entry plus the ids seen
    (to reject a repeated one)."""
    if durations is not None:
        raise ValueError(f"{dataset} takes durations from its annotation file; --durations is not used")
    seen: set[str] = set()
    counts = {"videos_in": 0, "rows": 0, "events_kept": 0, "events_end_past_duration": 0, "events_rejected": 0}
    with open(annotations) as f:
        try:
            for vid, entry in iter_object(f, pairs_hook=_first_wins):
                counts["videos_in"] += 1
                if vid in seen:  # the first entry of an id is read, a later one is rejected, never merged
                    yield Rejection(vid, DUPLICATE_ID, "the id appears again later in the file; first kept")
                    continue
                seen.add(vid)
                yield from _video(vid, entry, media_root, dataset, counts)
        except ValueError as exc:
            if isinstance(exc, json.JSONDecodeError):
                raise
            raise ValueError(f"{annotations}: expected an object {{video id: {{duration, timestamps, sentences}}}}"
                             ) from None
    stats.update(counts)


def _video(vid: str, entry: object, media_root: str | Path | None, dataset: str,
           counts: dict) -> Iterator[ManifestRow | Rejection]:
    """One video's row (or its rejection) after the rejections of its events."""
    if not vid.strip() or not make_key_ok(vid):
        yield Rejection(vid or "<empty id>", BAD_ID, f"id {vid!r} gives no sample key")
        return
    scratch = ReadResult()
    try:
        duration, events = _parse_events(vid, entry, scratch)
    except (KeyError, TypeError, ValueError) as exc:
        yield from scratch.rejected
        yield Rejection(vid, UNPARSABLE, f"{type(exc).__name__}: {exc}")
        return
    kept, flags = check_events(events, duration, vid, scratch)
    counts["events_rejected"] += sum(1 for r in scratch.rejected if r.reason == START_NOT_BEFORE_END)
    yield from scratch.rejected
    if not kept:
        yield Rejection(vid, NO_USABLE_EVENTS, f"{len(events)} published events, none usable")
        return
    counts["rows"] += 1
    counts["events_kept"] += len(kept)
    counts["events_end_past_duration"] += sum(1 for e in kept if e.end > duration)
    yield ManifestRow(key=make_key(vid), dataset=dataset, kind="video",
                      media=resolve_video(media_root, vid, alt_stems=_alt_stems(vid, entry)), window=None,
                      duration=duration, events=tuple(kept), source_id=vid, flags=tuple(sorted(flags)))
