"""A local HTTP server for the download tests: generated videos and failing URLs on 127.0.0.1, with a hit count.

Routes: `/v/NAME.mp4` a video (Content-Type video/mp4); `/page/NAME` the same bytes at a URL without an extension
(yt-dlp's generic extractor); `/missing.mp4` 404; `/slow.mp4` waits longer than any test timeout before answering;
`/truncated.mp4` promises more bytes than it sends; `/html.mp4` an HTML page; `/huge.mp4` a Content-Length of 1 TB.
`delay` (seconds) slows every video answer, so a test can kill a run in the middle; `broken[name] = status` makes
that video's routes answer the status instead (a server in trouble), until the test removes it. Also the
test's side of a run: write a manifest (`write_rows`), read a run's outputs, check its exact accounting.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from manifests.schema import ManifestRow, ReadResult, read_manifest, write_manifest


class MediaServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, videos: dict[str, Path], delay: float = 0.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.videos, self.delay = videos, delay
        self.hits: Counter = Counter()  # GET requests answered with a whole body, by path
        self.broken: dict[str, int] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: MediaServer

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = self.path.split("?")[0]
        name = Path(path).stem
        if path.startswith(("/v/", "/page/")) and name in self.server.broken:
            self._send(self.server.broken[name], "text/plain", b"try again later", body)
        elif path.startswith(("/v/", "/page/")) and name in self.server.videos:
            time.sleep(self.server.delay)
            self._send(200, "video/mp4", self.server.videos[name].read_bytes(), body)
        elif path == "/slow.mp4":
            time.sleep(30)
        elif path == "/truncated.mp4":
            data = next(iter(self.server.videos.values())).read_bytes()
            self._send(200, "video/mp4", data[: len(data) // 3], body, length=len(data))
        elif path == "/html.mp4":
            self._send(200, "text/html", b"<html><body>Sorry, this video is not here.</body></html>", body)
        elif path == "/huge.mp4":
            self._send(200, "video/mp4", b"\x00" * 1000, body, length=10 ** 12)
        else:
            self._send(404, "text/plain", b"not found", body)

    def _send(self, code: int, ctype: str, data: bytes, body: bool, length: int | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length if length is not None else len(data)))
        self.end_headers()
        if not body:
            return
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        with self.server.lock:
            self.server.hits[self.path.split("?")[0]] += 1
        if length is not None and length > len(data):
            self.close_connection = True


@contextmanager
def media_server(videos: dict[str, Path], delay: float = 0.0):
    server = MediaServer(videos, delay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def write_rows(rows: list[ManifestRow], path: Path) -> Path:
    return write_manifest(ReadResult(rows=rows), path, {"test": "download"})


def outputs(out: Path) -> tuple[dict[str, ManifestRow], list[dict]]:
    rows = {r.key: r for r in read_manifest(out / "manifest.parquet")}
    errors = [json.loads(ln) for ln in (out / "errors.jsonl").read_text().splitlines()]
    return rows, errors


def assert_exact(out: Path, keys: list[str]) -> tuple[dict[str, ManifestRow], dict[str, str]]:
    """Every input row is a file or an error record, once; every file exists."""
    rows, errors = outputs(out)
    reasons = {e["key"]: e["reason"] for e in errors}
    assert len(reasons) == len(errors)
    assert sorted(list(rows) + list(reasons)) == sorted(keys)
    assert all(Path(r.media).is_file() for r in rows.values())
    return rows, reasons
