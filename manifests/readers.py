"""The registry of dataset readers and the one entry point, `read_dataset`.

Every reader is `reader(annotations, durations=None, media_root=None, **options) -> ReadResult`. `read_dataset`
adds what is common: keys made unique (suffix + flag), rows whose media is missing under `--media-root` rejected,
and the kept / flagged / rejected counts in `stats`. `stream_dataset` does the same row by row, for
`manifests.build` to write with bounded memory.
"""
from __future__ import annotations

import inspect
from collections import Counter
from pathlib import Path
from typing import Iterator

from manifests.activitynet import read_activitynet, read_youcook2, stream_activitynet, stream_youcook2
from manifests.charades import read_charades
from manifests.common import check_row, media_checked, missing_media, unique_keys
from manifests.didemo import read_didemo
from manifests.files import read_files
from manifests.internvid import read_internvid, stream_internvid
from manifests.lcc import read_lcc, stream_lcc
from manifests.qvhighlights import read_qvhighlights
from manifests.schema import ManifestRow, ReadResult, Rejection
from manifests.selection import SelectionRule
from manifests.vtimellm import read_vtimellm

READERS = {
    "activitynet": read_activitynet,
    "charades": read_charades,
    "didemo": read_didemo,
    "internvid": read_internvid,
    "lcc": read_lcc,
    "qvhighlights": read_qvhighlights,
    "vtimellm": read_vtimellm,
    "youcook2": read_youcook2,
    "files": read_files,
}
STREAMS = {"activitynet": stream_activitynet, "internvid": stream_internvid, "lcc": stream_lcc,
           "youcook2": stream_youcook2}
"""Readers that give rows as they parse (the big sources); the others read their whole (small) file first."""
KEPT = -1


def reader_options(name: str) -> dict[str, object]:
    """The extra options a reader accepts, with their defaults (InternVid: the selection thresholds)."""
    if name == "internvid":
        return {f: getattr(SelectionRule(), f) for f in SelectionRule.__dataclass_fields__}
    params = inspect.signature(READERS[name]).parameters
    return {k: p.default for k, p in params.items() if k not in ("annotations", "durations", "media_root")
            and p.kind is p.KEYWORD_ONLY}


def _checked(name: str, annotations: str | Path, durations: str | Path | None, media_root: str | Path | None,
             options: dict) -> tuple[Path, Path | None]:
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(READERS)}")
    for path, what in ((annotations, "annotations"), (durations, "durations")):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{what} file not found: {path}")
    if media_root is not None and not Path(media_root).is_dir():
        raise FileNotFoundError(f"media root is not a folder: {media_root}")
    unknown = set(options) - set(reader_options(name))
    if unknown:
        raise ValueError(f"{name} takes no option {sorted(unknown)}; it takes {sorted(reader_options(name)) or 'none'}")
    # Media paths are stored absolute (a manifest is read from other folders and nodes): the `files` reader takes
    # them under the annotations' folder, the others under the media root.
    return Path(annotations).absolute(), None if media_root is None else Path(media_root).absolute()


def _reader_items(name: str, annotations: Path, durations, media_root, stats: dict, options: dict) -> Iterator:
    if name in STREAMS:
        return STREAMS[name](annotations, durations=durations, media_root=media_root, stats=stats, **options)
    result = READERS[name](annotations, durations=durations, media_root=media_root, **options)
    stats.update(result.stats)
    return iter([*result.rows, *result.rejected])


def stream_dataset(name: str, annotations: str | Path, durations: str | Path | None = None,
                   media_root: str | Path | None = None, *, stats: dict,
                   **options) -> Iterator[tuple[int, ManifestRow | Rejection]]:
    """(stage, item) per row kept and per rejection, as the annotations are read: stage `KEPT` for a row, else the
    step that rejected it (0 the reader, 1 `check_row`, 2 `media_checked`, 3 `missing_media`). Keys are not made
    unique here (`manifests.writer` does it at the end); `stats` holds the reader's figures once drained."""
    annotations, media_root = _checked(name, annotations, durations, media_root, options)
    for item in _reader_items(name, annotations, durations, media_root, stats, options):
        if isinstance(item, Rejection):
            yield 0, item
            continue
        row, rejected = check_row(item)
        for rej in rejected:
            yield 1, rej
        if row is None:
            continue
        row = media_checked(row, media_root if name != "files" else None)  # files: root checked in its reader
        if isinstance(row, Rejection):
            yield 2, row
            continue
        missing = missing_media(row) if media_root is not None and name != "files" else None
        yield (3, missing) if missing else (KEPT, row)


def final_stats(stats: dict, kept: int, flags: Counter, reasons: Counter) -> dict:
    """The reader's figures plus the kept / flagged / rejected counts `vtl-pipeline manifest` prints."""
    return {**stats, "kept": kept, "flagged": dict(sorted(flags.items())), "rejected": dict(sorted(reasons.items()))}


def read_dataset(name: str, annotations: str | Path, durations: str | Path | None = None,
                 media_root: str | Path | None = None, **options) -> ReadResult:
    """Read one annotation file (or folder, for `files`) of dataset `name` into manifest rows and rejections, in
    memory (`stream_dataset` + `manifests.writer` for a file of any size)."""
    stats: dict = {}
    rows, rejected = [], [[] for _ in range(4)]
    for stage, item in stream_dataset(name, annotations, durations, media_root, stats=stats, **options):
        (rows if stage == KEPT else rejected[stage]).append(item)
    result = unique_keys(ReadResult(rows, [r for stage in rejected for r in stage], stats))
    result.stats = final_stats(stats, len(result.rows), result.flag_counts(), result.rejection_counts())
    return result
