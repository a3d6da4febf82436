"""Which saved step a run resumes from: `latest` written atomically beside the `step*` folders, and read back with a
fallback to the newest complete step folder when it is empty or stale. train.engine saves and loads through these."""
from __future__ import annotations

import os
from pathlib import Path

LATEST = "latest"


TAG_PREFIX = "step"


def write_latest(directory: Path, tag: str) -> None:
    """Name `tag` in `directory/latest` atomically (temporary file, fsync, rename): DeepSpeed's own write of it is a
    plain open-and-write, and a kill inside it left `latest` empty beside complete step folders."""
    path = Path(directory) / LATEST
    tmp = path.with_name(f".{LATEST}.tmp")
    with open(tmp, "w") as f:
        f.write(tag)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _complete(folder: Path) -> bool:
    """A step folder the trainer finished writing: its rank-0 trainer state and an engine file that is not empty."""
    return ((folder / "trainer_rank0.json").is_file()
            and any(p.stat().st_size > 0 for p in folder.glob("*.pt") if p.is_file()))


def latest_tag(directory: Path) -> str | None:
    """The tag `latest` names; when `latest` is empty or names no folder (a run killed while writing it, or one saved
    by an older release), the newest complete `step*` folder. None when there is none."""
    directory = Path(directory)
    try:
        tag = (directory / LATEST).read_text().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        tag = ""
    if tag and "/" not in tag and (directory / tag).is_dir():
        return tag
    steps = sorted((p for p in directory.glob(f"{TAG_PREFIX}*") if p.is_dir() and _complete(p)), reverse=True)
    return steps[0].name if steps else None
