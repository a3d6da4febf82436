"""The registry of dataset readers and the one entry point, `read_dataset`.

Every reader is `reader(annotations, durations=None, media_root=None, **options) -> ReadResult`. `read_dataset`
adds what is common: keys made unique (suffix + flag), rows whose media is missing under `--media-root` rejected,
and the kept / flagged / rejected counts in `stats`.
"""
from __future__ import annotations

import inspect
from pathlib import Path

from manifests.activitynet import read_activitynet, read_youcook2
from manifests.charades import read_charades
from manifests.common import check_media, check_rows, drop_missing_media, unique_keys
from manifests.didemo import read_didemo
from manifests.files import read_files
from manifests.internvid import read_internvid
from manifests.lcc import read_lcc
from manifests.qvhighlights import read_qvhighlights
from manifests.schema import ReadResult
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


def reader_options(name: str) -> dict[str, object]:
    """The extra options a reader accepts, with their defaults (InternVid: the selection thresholds)."""
    if name == "internvid":
        return {f: getattr(SelectionRule(), f) for f in SelectionRule.__dataclass_fields__}
    params = inspect.signature(READERS[name]).parameters
    return {k: p.default for k, p in params.items() if k not in ("annotations", "durations", "media_root")
            and p.kind is p.KEYWORD_ONLY}


def read_dataset(name: str, annotations: str | Path, durations: str | Path | None = None,
                 media_root: str | Path | None = None, **options) -> ReadResult:
    """Read one annotation file (or folder, for `files`) of dataset `name` into manifest rows and rejections."""
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(READERS)}")
    for path, what in ((annotations, "annotations"), (durations, "durations")):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{what} file not found: {path}")
    if media_root is not None and not Path(media_root).is_dir():
        raise FileNotFoundError(f"media root is not a folder: {media_root}")
    # Media paths are stored absolute (a manifest is read from other folders and nodes): the `files` reader takes
    # them under the annotations' folder, the others under the media root.
    annotations = Path(annotations).absolute()
    if media_root is not None:
        media_root = Path(media_root).absolute()
    unknown = set(options) - set(reader_options(name))
    if unknown:
        raise ValueError(f"{name} takes no option {sorted(unknown)}; it takes {sorted(reader_options(name)) or 'none'}")
    result = READERS[name](annotations, durations=durations, media_root=media_root, **options)
    check_rows(result)
    check_media(result, media_root if name != "files" else None)  # files: checked in its reader, before lookups
    if media_root is not None and name != "files":
        drop_missing_media(result)
    unique_keys(result)
    result.stats.update({"kept": len(result.rows), "flagged": dict(sorted(result.flag_counts().items())),
                         "rejected": dict(sorted(result.rejection_counts().items()))})
    return result
