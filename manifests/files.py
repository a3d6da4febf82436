"""A user's own media: a folder of videos/images, one media file, or a JSONL of manifest fields.

- folder: every non-hidden file below it, in sorted path order; `kind` from the extension (other files are rejected
  as `not_media`, so nothing vanishes silently); key = the file stem through `make_key`; media = absolute path.
  Links to files are read; a dangling link (`dangling_link`), a link loop (`link_loop`), a link to a folder, a
  folder named like media (`x.mp4/`), a FIFO or socket (`not_a_file`) are rejections, counted in `inputs`.
- JSONL: one object per line with `media` (or `url` for remote media) and optionally `key`, `kind`, `window`
  ([start, end] or {start, end}),
  `duration`, `events` ([{start, end, caption}] or [[start, end, caption]], seconds relative to the window start),
  `caption`, `source_id`. Relative media paths are taken under `--media-root`, else beside the JSONL file.
Values are never coerced: a caption that is not a string, a `duration` that is not a finite number (`true`, "10") is
`bad_value`; a line that is not UTF-8 or not JSON is `unparsable`, each naming `file:line`. `file://` media are stored
as paths; with `--media-root`, media outside it (`../x`, `/etc/passwd`) are `bad_id`, as are names with a NUL or
over 255 bytes. Files that do not exist are rejected (`media_missing`). `--durations` (CSV id,duration) fills unknown durations by
key. Duplicate keys get `_2`, `_3`, ... in file order (flag `key_suffixed`).
"""
from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

from manifests.common import (
    BAD_VALUE,
    BAD_WINDOW,
    NO_MEDIA,
    NOT_MEDIA,
    REMOTE_MEDIA,
    UNPARSABLE,
    check_events,
    drop_missing_media,
    is_remote_media,
    is_uri,
    kind_of,
    media_problem,
    plain_media,
    read_durations,
)
from manifests.schema import Event, ManifestRow, ReadResult, Rejection, make_key

DATASET = "files"
DANGLING_LINK = "dangling_link"
LINK_LOOP = "link_loop"
NOT_A_FILE = "not_a_file"


def _media_row(path: Path, key: str, lengths: dict[str, float]) -> ManifestRow | Rejection:
    kind = kind_of(path)
    if kind is None:
        return Rejection(str(path), NOT_MEDIA, f"extension {path.suffix!r} is neither a video nor an image")
    return ManifestRow(key=key, dataset=DATASET, kind=kind, media=str(path.resolve()),
                       duration=lengths.get(key) if kind == "video" else None, source_id=str(path))


_FOLDER = ("folder", "")
"""A plain folder of the tree (walked, not an input)."""


def _entry_problem(p: Path) -> tuple[str, str] | None:
    """Why a folder entry is not a media file (a rejection reason and detail), `_FOLDER`, or None for a file. A link
    to a file is read; a dangling link, a link loop, a link to a folder (not followed), a folder named like media
    (`x.mp4/`) and anything else that is not a regular file (FIFO, socket) are counted rejections, never skipped."""
    if p.is_symlink():
        try:
            p.resolve(strict=True)
        except FileNotFoundError:
            return DANGLING_LINK, f"link to {os.readlink(p)!r}, which does not exist"
        except (RuntimeError, OSError) as exc:  # Python < 3.13: RuntimeError("Symlink loop"); later OSError ELOOP
            if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
                return LINK_LOOP, f"link {os.readlink(p)!r} leads back to itself"
            return NOT_A_FILE, f"link cannot be followed: {exc}"
    if p.is_file():
        return None
    if p.is_dir():
        if p.is_symlink():
            return NOT_A_FILE, "a link to a folder (links to folders are not followed)"
        return (NOT_A_FILE, "a folder, named like media") if kind_of(p) else _FOLDER
    return NOT_A_FILE, "neither a regular file nor a folder (FIFO, socket or device)"


class _BadValue(ValueError):
    """A field of the wrong type or a non-finite number: the record is rejected as `bad_value`, never coerced."""


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _BadValue(f"{what} {value!r} is not a finite number")
    return float(value)


def _text(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadValue(f"{what} {str(value)[:60]!r} is not a string")
    return value.strip()


def _window(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = (value["start"], value["end"])
    if isinstance(value, str) or len(value) != 2:
        raise ValueError(f"window {value!r}: need [start, end]")
    a, b = (_number(x, "window bound") for x in value)
    if not a < b or a < 0:
        raise ValueError(f"window {value}: need 0 ≤ start < end")
    return a, b


def _events(value: object) -> list[Event]:
    if value is not None and not isinstance(value, list):
        raise _BadValue(f"events {str(value)[:60]!r} is not a list")
    events = []
    for ev in value or ():
        if isinstance(ev, dict):
            s, e, cap = ev["start"], ev["end"], ev.get("caption", "")
        else:
            s, e, *rest = ev
            cap = rest[0] if rest else ""
        if not isinstance(cap, str):  # null would train "From 10 to 21, None."
            raise _BadValue(f"event caption {str(cap)[:60]!r} is not a string")
        events.append(Event(_number(s, "event start"), _number(e, "event end"), cap.strip()))
    return events


def _jsonl_row(where: str, rec: dict, base: Path, lengths: dict[str, float],
               result: ReadResult, media_root: Path | None) -> ManifestRow | Rejection:
    sid = _text(rec.get("source_id"), "source_id") or _text(rec.get("key"), "key") or where
    media = rec.get("media", rec.get("url"))  # `url`: remote media (what `vtl-pipeline download` fetches)
    if not isinstance(media, str) or not media.strip():
        return Rejection(sid, NO_MEDIA, "no `media` (or `url`)")
    media = plain_media(media)
    if problem := media_problem(media, media_root):
        return Rejection(sid, *problem)
    media = media if is_uri(media) or Path(media).is_absolute() else str(base / media)
    kind = _text(rec.get("kind"), "kind") or kind_of(media)
    if kind not in ("video", "image"):
        return Rejection(sid, NOT_MEDIA, f"{media}: give `kind` or a known video/image extension")
    key = make_key(_text(rec.get("key"), "key") or Path(media).stem)
    try:
        window = _window(rec.get("window"))
    except _BadValue:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        return Rejection(sid, BAD_WINDOW, str(exc))
    duration = rec.get("duration")
    duration = (_number(duration, "duration") if duration is not None
                else (window[1] - window[0]) if window else lengths.get(key))
    events, flags = check_events(_events(rec.get("events")), duration, sid, result)
    return ManifestRow(key=key, dataset=DATASET, kind=kind, media=media, window=window, duration=duration,
                       events=tuple(events), caption=_text(rec.get("caption"), "caption") or None,
                       source_id=_text(rec.get("source_id"), "source_id") or media,
                       flags=tuple(sorted({*flags, *([REMOTE_MEDIA] if is_remote_media(media) else [])})))


def _read_jsonl(path: Path, base: Path, lengths: dict[str, float], result: ReadResult,
                media_root: Path | None) -> int:
    """Every line becomes a row or one rejection naming `file:line` (a line that is not UTF-8 included)."""
    n = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            n += 1
            where = f"{path.name}:{lineno}"
            try:
                rec = json.loads(raw.decode("utf-8"))
                if not isinstance(rec, dict):
                    raise ValueError("not a JSON object")
                out = _jsonl_row(where, rec, base, lengths, result, media_root)
            except _BadValue as exc:
                out = Rejection(where, BAD_VALUE, str(exc))
            except UnicodeDecodeError as exc:
                out = Rejection(where, UNPARSABLE, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
            except (KeyError, TypeError, ValueError) as exc:
                out = Rejection(where, UNPARSABLE, f"{type(exc).__name__}: {exc}")
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
        entries = sorted(p for p in path.rglob("*") if not any(
            part.startswith(".") for part in p.relative_to(path).parts)) if path.is_dir() else [path]
        inputs = 0
        for p in entries:
            problem = _entry_problem(p)
            if problem == _FOLDER:
                continue
            inputs += 1
            out = Rejection(str(p), *problem) if problem else _media_row(p, make_key(p.stem), lengths)
            (result.rows if isinstance(out, ManifestRow) else result.rejected).append(out)
    else:
        root = Path(media_root) if media_root is not None else None
        inputs = _read_jsonl(path, root or path.parent, lengths, result, root)
    drop_missing_media(result)
    result.stats = {"inputs": inputs, "rows": len(result.rows),
                    "videos": sum(r.kind == "video" for r in result.rows),
                    "images": sum(r.kind == "image" for r in result.rows)}
    return result
