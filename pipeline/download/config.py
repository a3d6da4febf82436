"""The options of `vtl-pipeline download`: one frozen dataclass, one field per CLI option, each documented below."""
from __future__ import annotations

from dataclasses import dataclass

EXECUTORS = ("local", "ray")
"""`local`: threads in this process; `ray`: the sources in fixed slices over Ray tasks (pipeline/download/ray_run.py)."""


@dataclass(frozen=True)
class DownloadConfig:
    """Options of `vtl-pipeline download`."""

    manifest: str
    """Input manifest (.parquet written by `vtl-pipeline manifest`, any reader); a path or an s3:// / gs:// URL."""

    out: str
    """Output folder (path or s3:// / gs:// prefix): media/, manifest.parquet, errors.jsonl, rows/ (resume markers)."""

    margin: float = 0.0
    """Seconds kept before and after each row's window when cutting (clamped to the video); the new manifest's
    window points inside the margin, so events keep their times."""

    height: int | None = None
    """Re-encode to this height in pixels (width follows the aspect ratio, rounded to even); None keeps the size."""

    fps: float | None = None
    """Re-encode at this frame rate; None keeps the source's."""

    concurrency: int = 4
    """Sources fetched at the same time (threads)."""

    per_host: int = 2
    """At most this many downloads from one host at the same time (polite to the server, fewer 429s)."""

    retries: int = 3
    """Extra attempts for a transient failure (timeout, 5xx, 429, truncated body), with exponential backoff."""

    backoff: float = 1.0
    """Seconds before the first retry; doubled at each further attempt."""

    timeout: float = 60.0
    """Seconds without progress on a connection before the attempt fails as `timeout`."""

    max_bytes: int | None = None
    """Refuse media larger than this (`too_large`): by Content-Length before reading, else while reading."""

    url_template: str = "https://www.youtube.com/watch?v={id}"
    """Where a bare video id (InternVid, ActivityNet: media = `{id}.mp4`) is fetched from, through yt-dlp."""

    executor: str = "local"
    """`local`: threads in this process; `ray`: the sources split into fixed slices, one Ray task each (a local Ray,
    or the cluster at --address), each with --concurrency threads and its own --per-host limit."""

    address: str | None = None
    """Ray cluster to join (auto | HOST:PORT | ray://host:port); none: a local Ray. Needs --executor ray."""

    num_cpus: int | None = None
    """CPUs of a local Ray (none: all of this machine's): the Ray tasks that run at once."""

    tasks: int | None = None
    """Ray tasks (fixed slices of the manifest's sources, in input order); none: one per CPU of the cluster."""

    retry_failed: bool = False
    """Attempt again the rows whose marker records a transient failure (timeout, network, truncated, 429, 5xx);
    permanent ones (404, private, removed, ...) stay as they are."""

    progress: bool = True
    """Print one line per finished source."""

    def __post_init__(self) -> None:
        if not self.manifest or not self.out:
            raise ValueError("give --manifest FILE and --out DIR")
        if self.margin < 0:
            raise ValueError(f"--margin must be ≥ 0, got {self.margin}")
        if self.height is not None and (self.height < 2 or self.height % 2):
            raise ValueError(f"--height must be an even number ≥ 2, got {self.height}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"--fps must be > 0, got {self.fps}")
        for name in ("concurrency", "per_host"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if self.retries < 0 or self.backoff < 0 or not self.timeout > 0:
            raise ValueError("--retries and backoff must be ≥ 0, --timeout > 0")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError(f"--max-bytes must be ≥ 1, got {self.max_bytes}")
        if "{id}" not in self.url_template:
            raise ValueError(f"--url-template needs an {{id}} placeholder, got {self.url_template!r}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor must be one of {EXECUTORS}, got {self.executor!r}")
        if self.executor != "ray" and (self.address or self.num_cpus is not None or self.tasks is not None):
            raise ValueError("--address, --num-cpus and --tasks need --executor ray")
        for name in ("num_cpus", "tasks"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")

    @property
    def reencode(self) -> bool:
        return self.height is not None or self.fps is not None
