"""`vtl-pipeline download` against a local HTTP server: exact accounting, failure reasons, cut windows, resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from download_helpers import assert_exact, media_server, write_rows

from manifests.schema import ManifestRow, read_manifest
from pipeline.download.config import DownloadConfig
from pipeline.download.cut import out_size, probe
from pipeline.download.fetch import ytdlp_reason
from pipeline.download.run import download
from pipeline.download.sources import source_of, video_id
from pipeline.download.spool import PREFIX
from pipeline.synth.media import frame_counter_video

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {"a": frame_counter_video(d / "a.mp4", 100, 10.0), "b": frame_counter_video(d / "b.mp4", 50, 25.0),
            "c": frame_counter_video(d / "c.mp4", 30, 10.0)}


def test_every_row_a_file_or_an_error_with_its_reason(videos, tmp_path):
    with media_server(videos) as srv:
        u = srv.url
        rows = [ManifestRow("whole", "t", "video", f"{u}/v/a.mp4"),
                ManifestRow("win", "t", "video", f"{u}/v/a.mp4", window=(2.0, 5.0), duration=3.0),
                ManifestRow("page", "t", "video", f"{u}/page/b"),
                ManifestRow("gone", "t", "video", f"{u}/missing.mp4"),
                ManifestRow("slow", "t", "video", f"{u}/slow.mp4"),
                ManifestRow("cut_short", "t", "video", f"{u}/truncated.mp4"),
                ManifestRow("html", "t", "video", f"{u}/html.mp4"),
                ManifestRow("huge", "t", "video", f"{u}/huge.mp4"),
                ManifestRow("nopage", "t", "video", f"{u}/page/nothere")]
        cfg = DownloadConfig(manifest=str(write_rows(rows, tmp_path / "in.parquet")), out=str(tmp_path / "out"),
                             timeout=1.5, retries=1, backoff=0.05, max_bytes=10 ** 9, progress=False)
        counts = download(cfg, {})
        hits = dict(srv.hits)
    kept, reasons = assert_exact(tmp_path / "out", [r.key for r in rows])
    assert reasons == {"gone": "http_404", "slow": "timeout", "cut_short": "truncated", "html": "not_a_video",
                       "huge": "too_large", "nopage": "http_404"}
    assert (counts.files, sum(counts.errors.values()), counts.exit_code) == (3, 6, 0)
    assert hits["/v/a.mp4"] == 1, "two rows of one source: one fetch"
    assert hits["/truncated.mp4"] == 2, "a transient failure is retried (--retries 1)"
    assert hits.get("/huge.mp4", 0) <= 1 and "/missing.mp4" in hits
    assert kept["whole"].duration == pytest.approx(10.0, abs=0.1)
    assert (tmp_path / "out/media/whole.mp4").read_bytes() == videos["a"].read_bytes(), "no cut: the file as served"
    assert kept["win"].window is None and kept["win"].duration == 3.0


def test_cut_windows_margin_and_reencode(videos, tmp_path):
    with media_server(videos) as srv:
        rows = [ManifestRow("w1", "t", "video", f"{srv.url}/v/a.mp4", window=(2.0, 5.0), duration=3.0),
                ManifestRow("w2", "t", "video", f"{srv.url}/v/a.mp4", window=(0.3, 1.3), duration=1.0),
                ManifestRow("w3", "t", "video", f"{srv.url}/v/b.mp4", window=(0.52, 1.4), duration=0.88)]
        manifest = write_rows(rows, tmp_path / "in.parquet")
        download(DownloadConfig(manifest=str(manifest), out=str(tmp_path / "plain"), progress=False), {})
        download(DownloadConfig(manifest=str(manifest), out=str(tmp_path / "margin"), margin=0.5, progress=False), {})
        download(DownloadConfig(manifest=str(manifest), out=str(tmp_path / "small"), height=24, fps=5,
                                progress=False), {})
    plain, _ = assert_exact(tmp_path / "plain", ["w1", "w2", "w3"])
    for key, fps in (("w1", 10.0), ("w2", 10.0), ("w3", 25.0)):
        info = probe(plain[key].media)
        assert info.fps == fps and abs(info.duration - plain[key].duration) <= 1 / fps + 1e-6, (key, info)
    margin, _ = assert_exact(tmp_path / "margin", ["w1", "w2", "w3"])
    assert margin["w1"].window == (0.5, 3.5) and margin["w2"].window == pytest.approx((0.3, 1.3)), "clamped at 0"
    assert abs(probe(margin["w1"].media).duration - 4.0) <= 0.1 + 1e-6
    small, _ = assert_exact(tmp_path / "small", ["w1", "w2", "w3"])
    info = probe(small["w1"].media)
    assert (info.width, info.height, info.fps) == (32, 24, 5.0) and abs(info.duration - 3.0) <= 0.2 + 1e-6


def test_cut_starts_on_the_right_frame(tmp_path):
    """frame_counter_video paints frame i with grey level (7·i) mod 256: the cut's first frame is source frame 23."""
    import av

    src = frame_counter_video(tmp_path / "src.mp4", 60, 10.0)
    with media_server({"src": src}) as srv:
        rows = [ManifestRow("w", "t", "video", f"{srv.url}/v/src.mp4", window=(2.3, 3.3), duration=1.0)]
        download(DownloadConfig(manifest=str(write_rows(rows, tmp_path / "in.parquet")), out=str(tmp_path / "o"),
                                progress=False), {})
    with av.open(str(tmp_path / "o/media/w.mp4")) as c:
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    assert len(frames) == 10
    assert abs(float(frames[0][:, : frames[0].shape[1] // 2].mean()) - 7 * 23) < 6


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "download", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_exit_codes(videos, tmp_path):
    with media_server(videos) as srv:
        bad = write_rows([ManifestRow("x", "t", "video", f"{srv.url}/missing.mp4")], tmp_path / "bad.parquet")
        res = _cli("--manifest", str(bad), "--out", str(tmp_path / "o1"))
        assert res.returncode == 1 and "0 files, 1 errors" in res.stdout, res.stdout + res.stderr
        good = write_rows([ManifestRow("y", "t", "video", f"{srv.url}/v/c.mp4")], tmp_path / "good.parquet")
        res = _cli("--manifest", str(good), "--out", str(tmp_path / "o2"), "--margin", "-1")
        assert res.returncode == 2 and "--margin" in res.stderr
        res = _cli("--manifest", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "o3"))
        assert res.returncode == 2 and not (tmp_path / "o3").exists()
        res = _cli("--manifest", str(good), "--out", str(tmp_path / "o2"))
        assert res.returncode == 0 and "1 files, 0 errors" in res.stdout
        res = _cli("--manifest", str(good), "--out", str(tmp_path / "o2"), "--height", "24")
        assert res.returncode == 2 and "different height" in res.stderr


@pytest.mark.slow
def test_resume_after_kill_downloads_nothing_twice(videos, tmp_path):
    names = {f"v{i}": videos["abc"[i % 3]] for i in range(8)}
    with media_server(names, delay=0.6) as srv:
        rows = [ManifestRow(k, "t", "video", f"{srv.url}/v/{k}.mp4", window=(0.5, 2.0), duration=1.5)
                for k in names] + [ManifestRow("gone", "t", "video", f"{srv.url}/missing.mp4")]
        manifest = write_rows(rows, tmp_path / "in.parquet")
        out, spool = tmp_path / "out", tmp_path / "spool"
        spool.mkdir()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "VTL_SPOOL_DIR": str(spool)}
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "download", "--manifest", str(manifest),
                                 "--out", str(out), "--concurrency", "1"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while len(list((out / "rows").glob("*.json"))) < 3 and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done_before = {p.stem for p in (out / "rows").glob("*.json")} | {p.stem for p in (out / "media").glob("*.mp4")}
        assert 3 <= len(done_before) < len(rows) and not (out / "manifest.parquet").exists()
        first = dict(srv.hits)
        res = _cli("--manifest", str(manifest), "--out", str(out), env_extra={"VTL_SPOOL_DIR": str(spool)})
        again = {p: n - first.get(p, 0) for p, n in srv.hits.items() if n - first.get(p, 0)}
    assert res.returncode == 0, res.stdout + res.stderr
    assert not {f"/v/{k}.mp4" for k in done_before} & set(again), "a finished row was fetched again"
    assert all(n == 1 for n in again.values())
    _, reasons = assert_exact(out, [r.key for r in rows])
    assert reasons == {"gone": "http_404"}
    assert not list(out.rglob("*.tmp"))
    assert not list(spool.glob(f"{PREFIX}{proc.pid}-*")), "the killed run's spool folders are removed"


def test_sources_and_reasons():
    assert source_of("http://h/x.mp4", "T{id}").via == "http"
    assert source_of("https://www.youtube.com/watch?v=abc", "T{id}").via == "ytdlp"
    assert source_of("s3://b/k.mp4", "T{id}").via == "storage"
    assert source_of("dQw4w9WgXcQ.mp4", "https://y/?v={id}").url == "https://y/?v=dQw4w9WgXcQ"
    assert video_id("v_dQw4w9WgXcQ.mkv") == "dQw4w9WgXcQ" and video_id("v_short.mp4") == "v_short"
    with pytest.raises(ValueError, match="ftp"):
        source_of("ftp://h/x.mp4", "T{id}")
    assert ytdlp_reason("ERROR: [youtube] x: Private video. Sign in") == "private"
    assert ytdlp_reason("ERROR: [youtube] x: Video unavailable") == "unavailable"
    assert ytdlp_reason("This video has been removed by the uploader") == "removed"
    assert ytdlp_reason("The uploader has not made this video available in your country") == "geo_blocked"
    assert ytdlp_reason("not available in your country") == "geo_blocked"
    assert ytdlp_reason("Unable to download webpage: HTTP Error 429: Too Many") == "http_429"
    assert ytdlp_reason("Read timed out.") == "timeout"
    assert out_size(64, 48, 24) == (32, 24) and out_size(65, 47, None) == (64, 46)
    with pytest.raises(ValueError, match="executor"):
        DownloadConfig(manifest="m", out="o", executor="dask")
    with pytest.raises(ValueError, match="--executor ray"):
        DownloadConfig(manifest="m", out="o", tasks=2)


def test_object_store_in_and_out(videos, s3, tmp_path):
    from infra import storage

    storage.upload(videos["c"], f"{s3}/src/c.mp4")
    with media_server(videos) as srv:
        rows = [ManifestRow("s3vid", "t", "video", f"{s3}/src/c.mp4", window=(0.5, 2.0), duration=1.5),
                ManifestRow("s3gone", "t", "video", f"{s3}/src/none.mp4"),
                ManifestRow("web", "t", "video", f"{srv.url}/v/b.mp4")]
        storage.upload(write_rows(rows, tmp_path / "in.parquet"), f"{s3}/in.parquet")
        cfg = DownloadConfig(manifest=f"{s3}/in.parquet", out=f"{s3}/dl", progress=False)
        counts = download(cfg, {})
        again = download(cfg, {})
    assert (counts.files, dict(counts.errors), again.fetched_now) == (2, {"missing": 1}, 0)
    assert storage.listdir(f"{s3}/dl/media") == ["s3vid.mp4", "web.mp4"]
    local = tmp_path / "m.parquet"
    local.write_bytes(storage.read_bytes(f"{s3}/dl/manifest.parquet"))
    assert {r.key: r.media for r in read_manifest(local)} == {"s3vid": f"{s3}/dl/media/s3vid.mp4",
                                                             "web": f"{s3}/dl/media/web.mp4"}


def test_a_killed_runs_temporary_files_are_removed(videos, tmp_path):
    with media_server(videos) as srv:
        rows = [ManifestRow("k", "t", "video", f"{srv.url}/v/c.mp4")]
        manifest = write_rows(rows, tmp_path / "in.parquet")
        (tmp_path / "o/media").mkdir(parents=True)
        (tmp_path / "o/media/.k.mp4.tmp").write_bytes(b"half")
        counts = download(DownloadConfig(manifest=str(manifest), out=str(tmp_path / "o"), progress=False), {})
    assert counts.files == 1 and sorted(p.name for p in (tmp_path / "o/media").iterdir()) == ["k.mp4"]


def test_retry_failed_fetches_transient_failures_only(videos, tmp_path):
    with media_server(videos) as srv:
        srv.broken["b"] = 503
        rows = [ManifestRow("ok", "t", "video", f"{srv.url}/v/a.mp4"),
                ManifestRow("busy", "t", "video", f"{srv.url}/v/b.mp4", window=(0.2, 1.2), duration=1.0),
                ManifestRow("gone", "t", "video", f"{srv.url}/missing.mp4"),
                ManifestRow("html", "t", "video", f"{srv.url}/html.mp4")]
        cfg = DownloadConfig(manifest=str(write_rows(rows, tmp_path / "in.parquet")), out=str(tmp_path / "o"),
                             retries=0, progress=False)
        first = download(cfg, {})
        srv.broken.clear()
        before = dict(srv.hits)
        plain = download(cfg, {})
        assert dict(srv.hits) == before, "without --retry-failed a failed row is final"
        retried = download(replace(cfg, retry_failed=True), {})
        new = {p: n - before.get(p, 0) for p, n in srv.hits.items() if n != before.get(p, 0)}
        again = download(replace(cfg, retry_failed=True), {})
    assert dict(first.errors) == dict(plain.errors) == {"http_503": 1, "http_404": 1, "not_a_video": 1}
    assert (plain.fetched_now, retried.fetched_now, again.fetched_now) == (0, 1, 0)
    assert new == {"/v/b.mp4": 1}, "only the 503 row is attempted again; 404 and HTML stay failed"
    kept, reasons = assert_exact(tmp_path / "o", [r.key for r in rows])
    assert reasons == {"gone": "http_404", "html": "not_a_video"} and kept["busy"].duration == 1.0
    assert (retried.files, retried.exit_code) == (2, 0)


def test_spool_folders_of_dead_processes_are_removed_at_start(videos, tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setenv("VTL_SPOOL_DIR", str(spool))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = spool / f"{PREFIX}{int(gone.stdout)}-src-abc123"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub/source").write_bytes(b"half a video")
    live = spool / f"{PREFIX}{os.getppid()}-src-def456"  # a live process's: another run on this machine
    live.mkdir()
    other = spool / "someone-elses-folder"
    other.mkdir()
    with media_server(videos) as srv:
        rows = [ManifestRow("k", "t", "video", f"{srv.url}/v/c.mp4", window=(0.5, 1.5), duration=1.0)]
        counts = download(DownloadConfig(manifest=str(write_rows(rows, tmp_path / "in.parquet")),
                                         out=str(tmp_path / "o"), progress=False), {})
    assert counts.files == 1
    assert sorted(p.name for p in spool.iterdir()) == sorted([live.name, other.name]), "this run's own are gone too"
