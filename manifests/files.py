"""A user's own media: a folder of videos/images, one media file, or a JSONL of manifest fields.

- folder: every non-hidden file below it, in sorted path order; `kind` from the extension (other files are rejected
  as `not_media`, so nothing vanishes silently); key = the file stem through `make_key`; media = absolute path.
- JSONL: one object per line with `media` (or `url` for remote media) and optionally `key`, `kind`, `window` ([start, end] or {start, end}),
  `duration`, `events` ([{start, end, caption}] or [[start, end, caption]], seconds relative to the window start),
  `caption`, `source_id`. Relative media paths are taken under `--media-root`, else beside the JSONL file.
Files that do not exist are rejected (`media_missing`). `--durations` (CSV id,duration) fills unknown durations by
key. Duplicate keys get `_2`, `_3`, ... in file order (flag `key_suffixed`).
"""
from __future__ import annotations

import json
from pathlib import Path

from manifests.common import (
    BAD_WINDOW,
    NO_MEDIA,
    NOT_MEDIA,
    UNPARSABLE,
    check_events,
    drop_missing_media,
    is_uri,
    kind_of,
    read_durations,
)
from manifests.schema import Event, ManifestRow, ReadResult, Rejection, make_key

DATASET = "files"


def _media_row(path: Path, key: str, lengths: dict[str, float]) -> ManifestRow | Rejection:
    kind = kind_of(path)
    if kind is None:
        return Rejection(str(path), NOT_MEDIA, f"extension {path.suffix!r} is neither a video nor an image")
    return ManifestRow(key=key, dataset=DATASET, kind=kind, media=str(path.resolve()),
                       duration=lengths.get(key) if kind == "video" else None, source_id=str(path))


def _window(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = (value["start"], value["end"])
    a, b = (float(x) for x in value)
    if not a < b or a < 0:
        raise ValueError(f"window {value}: need 0 ≤ start < end")
    return a, b


def _events(value: object) -> list[Event]:
    events = []
    for ev in value or ():
        if isinstance(ev, dict):
            events.append(Event(float(ev["start"]), float(ev["end"]), str(ev.get("caption", "")).strip()))
        else:
            s, e, *cap = ev
            events.append(Event(float(s), float(e), str(cap[0]).strip() if cap else ""))
    return events


def _jsonl_row(lineno: int, rec: dict, base: Path, lengths: dict[str, float],
               result: ReadResult) -> ManifestRow | Rejection:
    sid = str(rec.get("source_id") or rec.get("key") or f"line{lineno}")
    media = rec.get("media", rec.get("url"))  # `url`: remote media (what `vtl-pipeline download` fetches)
    if not isinstance(media, str) or not media.strip():
        return Rejection(sid, NO_MEDIA, "no `media` (or `url`)")
    media = media if is_uri(media) or Path(media).is_absolute() else str(base / media)
    kind = rec.get("kind") or kind_of(media)
    if kind not in ("video", "image"):
        return Rejection(sid, NOT_MEDIA, f"{media}: give `kind` or a known video/image extension")
    key = make_key(str(rec.get("key") or Path(media).stem))
    try:
        window = _window(rec.get("window"))
    except (KeyError, TypeError, ValueError) as exc:
        return Rejection(sid, BAD_WINDOW, str(exc))
    duration = rec.get("duration")
    duration = float(duration) if duration is not None else (window[1] - window[0]) if window else lengths.get(key)
    events, flags = check_events(_events(rec.get("events")), duration, sid, result)
    caption = rec.get("caption")
    return ManifestRow(key=key, dataset=DATASET, kind=kind, media=media, window=window, duration=duration,
                       events=tuple(events), caption=str(caption).strip() if caption else None,
                       source_id=str(rec.get("source_id") or media), flags=tuple(sorted(flags)))


def _read_jsonl(path: Path, base: Path, lengths: dict[str, float], result: ReadResult) -> int:
    n = 0
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            n += 1
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not a JSON object")
                out = _jsonl_row(lineno, rec, base, lengths, result)
            except (KeyError, TypeError, ValueError) as exc:
                out = Rejection(f"line{lineno}", UNPARSABLE, f"{type(exc).__name__}: {exc}")
            (result.rows if isinstance(out, ManifestRow) else result.rejected).append(out)
    return n


def read_files(annotations: str | Path, durations: str | Path | None = None,
               media_root: str | Path | None = None) -> ReadResult:
    path = Path(annotations)
    lengths = read_durations(durations) if durations is not None else {}
    result = ReadResult()
    if path.is_dir() or path.suffix.lower() != ".jsonl":
        if media_root is not None:
            raise ValueError("files: --media-root applies to a JSONL; a folder or file is its own media root")
        paths = sorted(p for p in path.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(path).parts)) if path.is_dir() else [path]
        inputs = len(paths)
        for p in paths:
            out = _media_row(p, make_key(p.stem), lengths)
            (result.rows if isinstance(out, ManifestRow) else result.rejected).append(out)
    else:
        inputs = _read_jsonl(path, Path(media_root) if media_root is not None else path.parent, lengths, result)
    drop_missing_media(result)
    result.stats = {"inputs": inputs, "rows": len(result.rows),
                    "videos": sum(r.kind == "video" for r in result.rows),
                    "images": sum(r.kind == "image" for r in result.rows)}
    return result
