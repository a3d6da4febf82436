"""Helpers every reader shares: media paths, duration tables, event checks, unique keys, the reasons and flags.

Reasons (a `Rejection` = a record or an event that cannot be used) and flags (a kept row that looks wrong) are
named here once, so the counts printed by `vtl-pipeline manifest` read the same for every dataset.
"""
from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from manifests.schema import Event, ManifestRow, ReadResult, Rejection

# Rejection reasons.
UNPARSABLE = "unparsable"
START_NOT_BEFORE_END = "start_not_before_end"
NO_USABLE_EVENTS = "no_usable_events"
NO_DURATION = "no_duration"
NO_MEDIA = "no_media"
MEDIA_MISSING = "media_missing"
NO_CAPTION = "no_caption"
NOT_MEDIA = "not_media"
BAD_WINDOW = "bad_window"
BAD_DURATION = "bad_duration"
DUPLICATE_ID = "duplicate_id"
BAD_ID = "bad_id"
BAD_VALUE = "bad_value"
BAD_MEDIA = "unsupported_media"
VIDEO_TOKEN = "video_token_in_text"
CAPTION_TOO_LONG = "caption_too_long"
MAX_CAPTION_CHARS = 2000
"""Longest caption or event sentence a manifest takes (ActivityNet's longest sentences are a few hundred characters):
a longer one is rejected (`caption_too_long`), as it would be tokenized, rendered into every QA sample and trained on
whole (a 10 MB caption in a 500 MB annotation file)."""

VIDEO_PLACEHOLDER = "<video>"
"""The conversation placeholder the trainer replaces by the features (pipeline.contract.conversation's, which this
ground floor cannot import): annotation text holding it would put a second video slot into a sample."""

# Flags on kept rows.
END_PAST_DURATION = "event_end_past_duration"
START_NEGATIVE = "event_start_negative"
KEY_SUFFIXED = "key_suffixed"
REMOTE_MEDIA = "remote_media"

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_VIDEO_EXTS = (".mp4", ".mkv", ".webm")


def kind_of(path: str | Path) -> str | None:
    """`video` or `image` from a file's extension (case-insensitive), None for anything else."""
    ext = Path(str(path)).suffix.lower()
    return "video" if ext in VIDEO_EXTS else "image" if ext in IMAGE_EXTS else None


MEDIA_SCHEMES = ("s3", "gs")
"""URL schemes extract reads media from (infra.storage's object stores); file:// is stored as a plain path."""
FETCH_SCHEMES = ("http", "https")
"""URL schemes `vtl-pipeline download` fetches. Extract cannot read them: such a row is kept, flagged
`remote_media`, and extract records it as an error (`remote_media`) instead of failing its task."""
MAX_NAME_BYTES = 255
"""The longest file name most filesystems take (a longer id is `bad_id`, not an OSError ending the run)."""


def is_uri(media: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", media) is not None


def plain_media(media: str) -> str:
    """`file:///x/y.mp4` → `/x/y.mp4` (extract checks local media as paths); other media unchanged."""
    if media[:7].lower() == "file://":
        from urllib.parse import unquote

        return unquote(media[7:])
    return media


def _probe_safe(name: str) -> bool:
    """May `name` be looked up on disk? (a NUL or an over-long name raises there instead of answering)."""
    return "\0" not in name and len(name.encode("utf-8", "surrogateescape")) < MAX_NAME_BYTES - 8


def resolve_video(media_root: str | Path | None, stem: str, exts: Iterable[str] = DEFAULT_VIDEO_EXTS,
                  alt_stems: Iterable[str] = ()) -> str:
    """The media path of a video known only by its id: `{root}/{stem}{ext}` for the first ext (then the first
    alternative stem) that exists, else `{stem}.mp4` (under the root when one is given; a missing file is then
    rejected by `drop_missing_media`)."""
    exts = tuple(exts)
    if media_root is None:
        return f"{stem}{exts[0]}"
    root = Path(media_root)
    for name in (stem, *alt_stems):
        for ext in exts:
            if _probe_safe(name) and (root / f"{name}{ext}").is_file():
                return str(root / f"{name}{ext}")
    return str(root / f"{stem}{exts[0]}")


def resolve_named(media_root: str | Path | None, name: str) -> str:
    """A media path the annotation names (an image path, a file name): under the root when one is given."""
    if media_root is None or is_uri(name) or Path(name).is_absolute():
        return name
    return str(Path(media_root) / name)


def read_durations(path: str | Path) -> dict[str, float]:
    """A CSV of durations: an `id` column and a `length` (Charades' CSV) or `duration` column, seconds.
    Rows with an empty or unparsable value are left out, so their videos are rejected as `no_duration`."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        col = "length" if "length" in fields else "duration" if "duration" in fields else None
        if "id" not in fields or col is None:
            raise ValueError(f"{path}: a durations CSV needs an `id` column and a `length` or `duration` column, "
                             f"found {fields}")
        out = {}
        for row in reader:
            try:
                out[row["id"].strip()] = float(row[col])
            except (TypeError, ValueError):
                continue
        return out


def check_events(events: list[Event], duration: float | None, source_id: str,
                 result: ReadResult) -> tuple[list[Event], set[str]]:
    """Split published events into usable ones and rejections (start ≥ end); flag, but keep as published, events that
    end past the duration or start before 0 (the reference scorers use them as published; the timestamp rule clamps
    them at 99). The duration comparison is exact: the published value is the time base, whatever its rounding."""
    kept, flags = [], set()
    for i, ev in enumerate(events):
        if not ev.start < ev.end:
            result.rejected.append(Rejection(f"{source_id}#{i}", START_NOT_BEFORE_END,
                                             f"event {i} [{ev.start}, {ev.end}]: {ev.caption[:60]}"))
            continue
        if duration is not None and ev.end > duration:
            flags.add(END_PAST_DURATION)
        if ev.start < 0:
            flags.add(START_NEGATIVE)
        kept.append(ev)
    return kept, flags


def count_event_stats(result: ReadResult) -> None:
    """Event-level figures every video reader reports."""
    result.stats["rows"] = len(result.rows)
    result.stats["events_kept"] = sum(len(r.events) for r in result.rows)
    result.stats["events_end_past_duration"] = sum(
        1 for r in result.rows if r.duration is not None for e in r.events if e.end > r.duration)
    result.stats["events_rejected"] = sum(1 for r in result.rejected if r.reason == START_NOT_BEFORE_END)


def unique_keys(result: ReadResult) -> ReadResult:
    """Make keys unique in row order: the first row keeps its key, later ones get `_2`, `_3`, ... (skipping any
    suffix another row already uses) and the flag `key_suffixed`. Deterministic for a given annotation file."""
    taken = Counter(r.key for r in result.rows)
    if all(n == 1 for n in taken.values()):
        return result
    used: set[str] = set()
    rows = []
    for row in result.rows:
        if row.key not in used:
            used.add(row.key)
            rows.append(row)
            continue
        n = 2
        while f"{row.key}_{n}" in used or f"{row.key}_{n}" in taken:
            n += 1
        new = f"{row.key}_{n}"
        used.add(new)
        rows.append(replace(row, key=new, flags=tuple(sorted(set(row.flags) | {KEY_SUFFIXED}))))
    result.rows = rows
    return result


def check_row(row: ManifestRow) -> tuple[ManifestRow | None, list[Rejection]]:
    """What every reader's rows must satisfy, as per-record rejections: a duration (when known) finite and > 0; a window
    and event times finite (a window [0, Infinity] would fail extract's whole task, not one row); no
    `<video>` in a caption, or a caption over MAX_CAPTION_CHARS (that event is rejected; a row left without events, or
    an image caption, is rejected). Returns the row as kept (None when rejected) and the rejections."""
    ident = row.source_id or row.key
    d = row.duration
    if d is not None and not (isinstance(d, (int, float)) and math.isfinite(d) and d > 0):
        return None, [Rejection(ident, BAD_DURATION, f"duration {d!r}: must be finite and > 0")]
    if row.window is not None and not all(math.isfinite(t) and t >= 0 for t in row.window):
        return None, [Rejection(ident, BAD_WINDOW, f"window {list(row.window)}: need finite 0 ≤ start < end")]
    if not all(math.isfinite(t) for ev in row.events for t in (ev.start, ev.end)):
        return None, [Rejection(ident, BAD_VALUE, "an event time is not a finite number")]
    if row.caption is not None and (problem := caption_problem(row.caption)):
        return None, [Rejection(ident, *problem)]
    events = tuple(ev for ev in row.events if not caption_problem(ev.caption))
    rejected = [Rejection(f"{ident}#{i}", *problem)
                for i, ev in enumerate(row.events) if (problem := caption_problem(ev.caption))]
    if row.events and not events:
        return None, [*rejected, Rejection(ident, NO_USABLE_EVENTS, "no event has a usable caption")]
    return (row if events == row.events else replace(row, events=events)), rejected


def check_rows(result: ReadResult) -> ReadResult:
    """`check_row` over a result's rows."""
    kept = []
    for row in result.rows:
        row, rejected = check_row(row)
        result.rejected.extend(rejected)
        if row is not None:
            kept.append(row)
    result.rows = kept
    return result


def caption_problem(text: str) -> tuple[str, str] | None:
    """(reason, detail) when a caption cannot go into a sample: it holds `<video>`, or exceeds MAX_CAPTION_CHARS."""
    if VIDEO_PLACEHOLDER in text:
        return VIDEO_TOKEN, f"caption holds {VIDEO_PLACEHOLDER}: {text[:60]}"
    if len(text) > MAX_CAPTION_CHARS:
        return CAPTION_TOO_LONG, f"{len(text)} characters, more than {MAX_CAPTION_CHARS}: {text[:40]}..."
    return None


def media_problem(media: str, media_root: str | Path | None) -> tuple[str, str] | None:
    """(reason, detail) when a row's media cannot be read safely: a URL extract cannot read (`http://`, ...), a NUL or
    an over-long name, or (with a media root) a path outside the root (an id like `../x` or `/etc/passwd`)."""
    if is_uri(media):
        name = media.split("://", 1)[0].lower()
        if name in MEDIA_SCHEMES or name in FETCH_SCHEMES:
            return None
        return BAD_MEDIA, (f"{name}:// media cannot be read (use a local path, file://, "
                           f"{'://, '.join(MEDIA_SCHEMES + FETCH_SCHEMES)}:// (fetched by vtl-pipeline download))")
    if "\0" in media:
        return BAD_ID, f"{media[:80]!r} holds a NUL character"
    if any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for part in Path(media).parts):
        return BAD_ID, f"{media[:80]!r}...: a file name longer than {MAX_NAME_BYTES} bytes"
    if media_root is not None:
        root = os.path.abspath(media_root)
        if os.path.commonpath([root, os.path.abspath(os.path.join(root, media))]) != root:
            return BAD_ID, f"{media[:120]} is outside the media root {root}"
    return None


def is_remote_media(media: str) -> bool:
    """An http(s) URL: media to fetch with `vtl-pipeline download` before extract can read it."""
    return media.split("://", 1)[0].lower() in FETCH_SCHEMES if "://" in media else False


def flag_remote(row: ManifestRow) -> ManifestRow:
    """The row, flagged `remote_media` when its media must be downloaded first."""
    if not is_remote_media(row.media) or REMOTE_MEDIA in row.flags:
        return row
    return replace(row, flags=tuple(sorted({*row.flags, REMOTE_MEDIA})))


def media_checked(row: ManifestRow, media_root: str | Path | None) -> ManifestRow | Rejection:
    """The row with file:// media stored as a plain path (flagged when it must be downloaded first), or the rejection
    `media_problem` names (before any file is looked up)."""
    media = plain_media(row.media)
    problem = media_problem(media, media_root)
    if problem:
        return Rejection(row.source_id or row.key, *problem)
    return flag_remote(row if media == row.media else replace(row, media=media))


def check_media(result: ReadResult, media_root: str | Path | None) -> ReadResult:
    """`media_checked` over a result's rows."""
    kept = []
    for row in result.rows:
        out = media_checked(row, media_root)
        (kept if isinstance(out, ManifestRow) else result.rejected).append(out)
    result.rows = kept
    return result


def missing_media(row: ManifestRow) -> Rejection | None:
    """The rejection of a row whose local media file does not exist (URIs are left to the decoder)."""
    if is_uri(row.media) or Path(row.media).is_file():
        return None
    return Rejection(row.source_id or row.key, MEDIA_MISSING, row.media)


def drop_missing_media(result: ReadResult) -> ReadResult:
    """Reject rows whose local media file does not exist (URIs are left to the decoder)."""
    kept = []
    for row in result.rows:
        rejection = missing_media(row)
        (kept if rejection is None else result.rejected).append(rejection or row)
    result.rows = kept
    return result
