"""Fetch one source to a local file: plain http(s), yt-dlp, the storage layer, or a local copy.

Every failure becomes a `FetchError` with a reason word (pipeline/download/sources.py); `fetch` retries the transient
ones with exponential backoff and holds a per-host slot while it reads, so no host sees more than `per_host`
downloads at once. yt-dlp is imported here, inside the function that needs it.
"""
from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

from infra import storage
from pipeline.download.config import DownloadConfig
from pipeline.download.sources import (
    GEO_BLOCKED,
    MISSING,
    NETWORK,
    NOT_A_VIDEO,
    PRIVATE,
    REMOVED,
    TIMEOUT,
    TOO_LARGE,
    TRUNCATED,
    UNAVAILABLE,
    FetchError,
    Source,
    http_status,
)

CHUNK = 1 << 20
YTDLP_FORMAT = "bv*[ext=mp4]{h}/bv*{h}/b{h}/bv*/b"
"""Video streams only when the site splits them (audio is not used, and a split audio+video pair would need ffmpeg to
merge); mp4 first; no taller than --height when one is given."""
YTDLP_MISSING = "yt-dlp is not installed (needed for video ids and page URLs): pip install 'yt-dlp>=2025.1'"


class HostSlots:
    """At most `n` concurrent fetches per host."""

    def __init__(self, n: int):
        self.n, self._lock, self._slots = n, threading.Lock(), {}

    @contextmanager
    def hold(self, host: str):
        with self._lock:
            slot = self._slots.setdefault(host, threading.Semaphore(self.n))
        with slot:
            yield


def fetch(source: Source, folder: str, cfg: DownloadConfig, slots: HostSlots) -> str:
    """The source as a local file inside `folder`, after up to `cfg.retries` extra attempts for transient failures."""
    for attempt in range(cfg.retries + 1):
        try:
            with slots.hold(source.host):
                return _FETCHERS[source.via](source.url, folder, cfg)
        except FetchError as exc:
            if not exc.transient or attempt == cfg.retries:
                raise
        time.sleep(cfg.backoff * 2 ** attempt)
    raise AssertionError("unreachable")


def _too_large(n: int, cfg: DownloadConfig) -> None:
    if cfg.max_bytes is not None and n > cfg.max_bytes:
        raise FetchError(TOO_LARGE, f"{n} bytes > --max-bytes {cfg.max_bytes}")


def fetch_http(url: str, folder: str, cfg: DownloadConfig) -> str:
    dest = os.path.join(folder, "source")
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "vtl-download"}),
                                    timeout=cfg.timeout) as resp:
            ctype = resp.headers.get("Content-Type", "")
            if ctype.startswith("text/"):
                raise FetchError(NOT_A_VIDEO, f"Content-Type {ctype}")
            length = resp.headers.get("Content-Length")
            if length is not None:
                _too_large(int(length), cfg)
            got = _copy(resp, dest, cfg)
            if length is not None and got < int(length):
                raise FetchError(TRUNCATED, f"{got} of {length} bytes")
    except urllib.error.HTTPError as exc:
        raise FetchError(http_status(exc.code), f"{url}: {exc.reason}") from None
    except (TimeoutError, socket.timeout) as exc:
        raise FetchError(TIMEOUT, f"{url}: no data for {cfg.timeout} s") from exc
    except http.client.IncompleteRead as exc:
        raise FetchError(TRUNCATED, f"{url}: {len(exc.partial)} bytes, then the connection closed") from None
    except urllib.error.URLError as exc:
        reason = TIMEOUT if isinstance(exc.reason, (TimeoutError, socket.timeout)) else NETWORK
        raise FetchError(reason, f"{url}: {exc.reason}") from None
    except (ConnectionError, http.client.HTTPException) as exc:
        raise FetchError(NETWORK, f"{url}: {type(exc).__name__}: {exc}") from None
    return dest


def _copy(src, dest: str, cfg: DownloadConfig) -> int:
    got = 0
    with open(dest, "wb") as f:
        while block := src.read(CHUNK):
            got += len(block)
            _too_large(got, cfg)
            f.write(block)
    return got


def fetch_storage(url: str, folder: str, cfg: DownloadConfig) -> str:
    try:
        _too_large(storage.size(url), cfg)
        with storage.open(url) as src:
            dest = os.path.join(folder, "source")
            _copy(src, dest, cfg)
    except FileNotFoundError:
        raise FetchError(MISSING, f"{url}: no such object") from None
    except PermissionError as exc:
        raise FetchError(http_status(403), f"{url}: {exc}") from None
    return dest


def fetch_copy(path: str, folder: str, cfg: DownloadConfig) -> str:
    _too_large(os.path.getsize(path), cfg)
    dest = os.path.join(folder, "source")
    shutil.copyfile(path, dest)
    return dest


_YTDLP_REASONS = (
    (r"private video|sign in if you've been granted access", PRIVATE),
    (r"removed|terminated|no longer available|deleted", REMOVED),
    (r"available in your country|geo.?restrict|blocked it in your country", GEO_BLOCKED),
    (r"timed out|timeout", TIMEOUT),
    (r"larger than max-filesize|max.?filesize", TOO_LARGE),
    (r"unsupported url|no video formats|no media found", NOT_A_VIDEO),
    (r"incomplete|content-length", TRUNCATED),
)


def ytdlp_reason(message: str) -> str:
    """A yt-dlp error message → a reason word (its messages are the only signal it gives)."""
    m = re.search(r"HTTP Error (\d{3})", message)
    if m:
        return http_status(int(m.group(1)))
    low = message.lower()
    for pattern, reason in _YTDLP_REASONS:
        if re.search(pattern, low):
            return reason
    return UNAVAILABLE


class _Quiet:
    """yt-dlp's logger: keep the last error, print nothing (failures become error records)."""

    def __init__(self):
        self.last = ""

    def debug(self, msg: str) -> None:
        if "max-filesize" in msg:
            self.last = msg

    warning = debug

    def error(self, msg: str) -> None:
        self.last = msg


def fetch_ytdlp(url: str, folder: str, cfg: DownloadConfig) -> str:
    try:
        import yt_dlp
    except ImportError:
        raise RuntimeError(YTDLP_MISSING) from None
    log = _Quiet()
    h = f"[height<=?{cfg.height}]" if cfg.height else ""
    opts = {"outtmpl": os.path.join(folder, "source.%(ext)s"), "format": YTDLP_FORMAT.format(h=h),
            "quiet": True, "no_warnings": True, "noprogress": True, "logger": log, "noplaylist": True,
            "socket_timeout": cfg.timeout, "retries": 0, "fragment_retries": 0, "cachedir": False,
            "max_filesize": cfg.max_bytes, "updatetime": False}
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            ydl.extract_info(url, download=True)
    except yt_dlp.utils.DownloadError as exc:
        raise FetchError(ytdlp_reason(str(exc)), str(exc).removeprefix("ERROR: ")[:300]) from None
    done = [n for n in os.listdir(folder) if n.startswith("source.") and not n.endswith((".part", ".ytdl"))]
    if not done:
        raise FetchError(ytdlp_reason(log.last) if log.last else UNAVAILABLE, log.last or f"{url}: nothing saved")
    return os.path.join(folder, done[0])


_FETCHERS = {"http": fetch_http, "ytdlp": fetch_ytdlp, "storage": fetch_storage, "copy": fetch_copy}
