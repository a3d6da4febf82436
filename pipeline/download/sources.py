"""Where a manifest row's media comes from, and the reasons a fetch fails (one word each, as in errors.jsonl).

A row's `media` decides the fetcher: an http(s) URL ending in a media extension is read directly; any other http(s)
URL goes through yt-dlp (YouTube, Vimeo, a page with a <video>, ...); s3:// and gs:// through the storage layer; an
existing local file is copied; anything else is a bare video id (InternVid and ActivityNet store `{id}.mp4`), fetched
through yt-dlp from `url_template`. Rows that share a source (InternVid's windows of one video) share one fetch.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from manifests.common import kind_of

# Failure reasons.
UNAVAILABLE = "unavailable"
PRIVATE = "private"
REMOVED = "removed"
GEO_BLOCKED = "geo_blocked"
TIMEOUT = "timeout"
TOO_LARGE = "too_large"
NOT_A_VIDEO = "not_a_video"
TRUNCATED = "truncated"
NETWORK = "network"
MISSING = "missing"
CUT_FAILED = "cut_failed"


def http_status(code: int) -> str:
    return f"http_{code}"


TRANSIENT = {TIMEOUT, TRUNCATED, NETWORK, "http_429"}
"""Reasons worth another attempt, with every 5xx status (`is_transient`); the rest (404, private, removed, too
large, ...) will not change by retrying."""
_SERVER_ERROR = re.compile(r"^http_5\d\d$")


def is_transient(reason: str) -> bool:
    """Worth another attempt: the words in TRANSIENT and any other 5xx status (a server's trouble, not the video's)."""
    return reason in TRANSIENT or bool(_SERVER_ERROR.match(reason))


class FetchError(Exception):
    """One source could not be fetched: `reason` is one of the words above, `detail` says what happened."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail

    @property
    def transient(self) -> bool:
        return is_transient(self.reason)


@dataclass(frozen=True)
class Source:
    """A fetchable location: `via` is http, ytdlp, storage or copy; `host` groups sources for the per-host limit."""

    url: str
    via: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc or self.via


_ACTIVITYNET_ID = re.compile(r"^v_([A-Za-z0-9_-]{11})$")


def video_id(media: str) -> str:
    """The video id of a bare media name: the file stem, without ActivityNet's `v_` prefix."""
    stem = PurePosixPath(media).stem
    m = _ACTIVITYNET_ID.match(stem)
    return m.group(1) if m else stem


def source_of(media: str, url_template: str) -> Source:
    scheme = urlsplit(media).scheme.lower() if "://" in media else ""
    if scheme in ("http", "https"):
        direct = kind_of(urlsplit(media).path) is not None
        return Source(media, "http" if direct else "ytdlp")
    if scheme in ("s3", "gs", "gcs", "file"):
        return Source(media, "storage")
    if scheme:
        raise ValueError(f"{media}: cannot download a {scheme}:// URL (http, https, s3, gs or a video id)")
    if os.path.isfile(media):
        return Source(os.path.abspath(media), "copy")
    return Source(url_template.format(id=video_id(media)), "ytdlp")


def media_suffix(source: Source, kind: str) -> str:
    """The extension the downloaded file keeps (yt-dlp picks mp4 first; re-encoded or cut videos are .mp4)."""
    ext = PurePosixPath(urlsplit(source.url).path).suffix.lower()
    if kind_of(ext) == kind:
        return ext
    return ".mp4" if kind == "video" else ".jpg"
