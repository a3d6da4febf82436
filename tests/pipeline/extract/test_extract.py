"""extract in this process: frame indices by the contract, meta.json, bad media as data, images, resume, refusals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.extract import TINY, accounting, assert_exact, bad_rows, config, good_rows, make_media, write_rows

from pipeline.contract import timing
from pipeline.contract.shards import META_FIELDS, read_index
from pipeline.extract.decode import MediaError, open_video
from pipeline.extract.job import ExtractError, run_extract
from pipeline.extract.single import extract_one
from pipeline.extract.steps import Decode, Item, SampleFrames


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    return make_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def full_run(media, tmp_path_factory):
    """One in-process run over good and bad rows, shared by the checks below."""
    d = tmp_path_factory.mktemp("run")
    rows = good_rows(media) + bad_rows(media, d)
    manifest = write_rows(rows, d / "manifest.parquet")
    summary = run_extract(config(manifest, d / "out", executor="local", tasks=3, samples_per_shard=2))
    return rows, d / "out", summary


def grey_level(frame: np.ndarray) -> int:
    return int(round(float(frame[:, : frame.shape[1] // 4].mean())))


@pytest.mark.parametrize("name,window", [("v60", None), ("v150", None), ("v150", (1.5, 4.2)), ("v37", (0.5, 2.0)),
                                         ("v150", (4.0, 99.0))])
def test_sampled_frames_follow_the_contract(media, name, window):
    src = open_video(str(media[name]))
    row = {"key": "k", "dataset": "d", "kind": "video", "media": str(media[name]),
           "window": list(window) if window else None}
    items = SampleFrames()(Decode()([Item(row=row)]))
    item = items[0]
    assert item.error is None
    expected = timing.frame_indices(src.num_frames, src.fps, window)
    assert item.meta["frame_indices"] == expected
    assert item.meta["frame_times"] == timing.frame_times(expected, src.fps)
    assert item.frames.shape[0] == timing.NUM_FRAMES
    # The frame-counter video paints frame i with grey (7·i) mod 256: the decoder returned exactly those frames.
    levels = [grey_level(f) for f in item.frames]
    assert all(abs(lv - (7 * i) % 256) <= 3 for lv, i in zip(levels, expected)), (levels[:8], expected[:8])


def test_meta_and_features(full_run, media):
    rows, out, summary = full_run
    samples, _ = accounting(out)
    assert set(samples) == {"whole60", "whole150", "win150", "whole37", "image"}
    index = read_index(out)
    assert index["encoder"].startswith("open_clip:tiny-random|random-seed0|tv-bicubic")
    assert index["dim"] == 768 and index["num_frames"] is None  # videos and an image
    for s in samples.values():
        assert set(META_FIELDS) | {"decoder"} <= set(s.meta)
        assert s.features.dtype == np.float16 and s.features.shape[1] == 768
        assert np.isfinite(s.features.astype(np.float32)).all()
        assert s.meta["encoder"] == index["encoder"]
    v = samples["whole150"].meta
    assert v["duration"] == 6.0 and v["fps"] == 25.0 and v["num_frames"] == 150 and v["decoder"] == "decord"
    assert v["events"] == [{"start": 1.0, "end": 2.5, "caption": "the grey gets lighter"}]
    assert v["caption"] == "a test" and v["source_id"] == "src150"
    assert samples["win150"].meta["duration"] == pytest.approx(2.7)  # no manifest duration: the window's length
    assert samples["win150"].meta["window"] == [1.5, 4.2]
    assert samples["whole60"].meta["duration"] == pytest.approx(6.0)  # num_frames / fps
    img = samples["image"]
    assert img.features.shape == (1, 768) and img.meta["frame_indices"] == [0] and img.meta["decoder"] == "pil"
    # Features differ between frames of the same video (the encoder saw different pixels).
    assert not np.array_equal(samples["whole60"].features[0], samples["whole60"].features[-1])


def test_bad_media_are_error_records(full_run):
    rows, out, summary = full_run
    _, errors = assert_exact(out, rows)
    by_key = {e.key: e for e in errors}
    assert by_key["missing"].reason == "missing_file" and by_key["missing"].step == "decode"
    assert by_key["corrupt"].reason == "unreadable"
    assert by_key["outside"].reason == "window_outside_file" and by_key["outside"].step == "sample_frames"
    assert by_key["missing_image"].reason == "missing_file"
    assert by_key["remote"].reason == "remote_media" and by_key["remote"].step == "decode"
    assert summary.errors == {"missing_file": 2, "unreadable": 1, "window_outside_file": 1, "remote_media": 1}
    assert summary.samples == 5 and not summary.failed
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["producer"]["name"] == "vtl" and run_config["config"]["tasks"] == 3


def test_rerun_skips_done_tasks_and_refuses_changes(full_run):
    rows, out, _ = full_run
    manifest = Path(out).parent / "manifest.parquet"
    again = run_extract(config(manifest, out, executor="local", tasks=3, samples_per_shard=2))
    assert again.tasks_run == 0 and again.tasks_skipped == 3
    assert_exact(out, rows)
    with pytest.raises(ExtractError, match="task count"):
        run_extract(config(manifest, out, executor="local", tasks=4))
    with pytest.raises(ExtractError, match="encoder"):
        run_extract(config(manifest, out, executor="local", tasks=3, clip=TINY.__class__(model="tiny-random",
                                                                                         seed=1)))


def test_extract_one_video_window_and_image(media):
    feats, meta = extract_one(media["v150"], TINY, window=(1.5, 4.2))
    assert feats.shape == (100, 768) and feats.dtype == np.float16
    assert meta["frame_indices"] == timing.frame_indices(150, 25.0, (1.5, 4.2))
    feats_img, meta_img = extract_one(media["im"], TINY)
    assert feats_img.shape == (1, 768) and meta_img["kind"] == "image"
    with pytest.raises(MediaError) as e:
        extract_one(media["corrupt"], TINY)
    assert e.value.reason == "unreadable"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "extract", *args]


def test_killed_run_resumes_with_exact_accounting(media, tmp_path):
    """kill -9 of the driver mid-run, leftovers of unfinished tasks, then a rerun: every row exactly once."""
    rows = [r for r in good_rows(media) if r.kind == "video"]
    rows = [r.__class__(**{**r.__dict__, "key": f"{r.key}_{i}"}) for i in range(3) for r in rows]
    rows += bad_rows(media, tmp_path)[:2]
    manifest = write_rows(rows, tmp_path / "manifest.parquet")
    out = tmp_path / "out"
    args = _cli("--manifest", str(manifest), "--out", str(out), "--executor", "local", "--tasks", "5",
                "--samples-per-shard", "1", "--clip-model", "tiny-random", "--no-progress")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.time() + 120
    while not (out / "tasks" / "task-00001.done.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "first tasks did not finish in time"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "index.json").exists()
    # What a crash in the middle of a shard leaves: a temporary tar and a renamed shard of an unfinished task.
    (out / ".task-00004-000003.tar.tmp").write_bytes(b"partial")
    (out / "task-00004-000007.tar").write_bytes(b"stale shard of an unfinished task")
    summary = run_extract(config(manifest, out, executor="local", tasks=5, samples_per_shard=1))
    assert summary.tasks_skipped >= 2 and summary.tasks_run + summary.tasks_skipped == 5
    samples, errors = assert_exact(out, rows)
    assert len(samples) == 12 and len(errors) == 2
    assert not (out / "task-00004-000007.tar").exists()
    from pipeline.inspect.verify import verify

    assert verify(out, read_index(out)).ok


def test_cli_stops_before_work_on_bad_options(tmp_path, media):
    manifest = write_rows(good_rows(media)[:1], tmp_path / "manifest.parquet")
    bad_weights = tmp_path / "ViT-L-14.pt"
    bad_weights.write_bytes(b"not a checkpoint")
    cases = [
        (["--manifest", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "o1"), "--clip-model", "tiny-random"],
         "not found"),
        (["--manifest", str(manifest), "--out", str(tmp_path / "o2"), "--clip-weights", str(bad_weights)],
         "cannot read CLIP weights"),
        (["--manifest", str(manifest), "--out", str(tmp_path / "o3")], "ViT-L-14 needs weights"),
        (["--manifest", str(manifest), "--out", str(tmp_path / "o4"), "--clip-model", "tiny-random",
          "--batch-size", "0"], "--batch-size must be"),
        (["--manifest", str(manifest), "--out", "/proc/vtl-out", "--clip-model", "tiny-random"], "not writable"),
    ]
    from typer.testing import CliRunner

    from pipeline.cli import app

    for args, message in cases:
        res = CliRunner().invoke(app, ["extract", *args, "--executor", "local"])
        assert res.exit_code == 2, (args, res.output[-1000:], res.exception)
        assert message in " ".join(res.output.split()), res.output[-1000:]
    assert not (tmp_path / "o2" / "tasks").exists(), "nothing may start before the model loads"


def test_pyav_fallback_where_decord_cannot_open(tmp_path):
    """A raw H.264 elementary stream (no container): decord refuses it, PyAV decodes it; meta records the decoder."""
    import av

    path = tmp_path / "raw.h264"
    with av.open(str(path), "w", format="h264") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(50):
            frame = np.full((48, 64, 3), (i * 7) % 256, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    row = {"key": "raw", "dataset": "d", "kind": "video", "media": str(path), "window": None}
    item = SampleFrames()(Decode()([Item(row=row)]))[0]
    assert item.error is None and item.meta["decoder"] == "pyav" and item.meta["num_frames"] == 50
    expected = timing.frame_indices(50, item.meta["fps"])
    assert item.meta["frame_indices"] == expected
    assert all(abs(grey_level(f) - (7 * i) % 256) <= 3 for f, i in zip(item.frames, expected))


def test_cli_dataset_name_finds_manifest_and_output(tmp_path, media):
    from typer.testing import CliRunner

    from pipeline.cli import app

    rows = good_rows(media)[:1] + bad_rows(media, tmp_path)[:1]
    write_rows(rows, tmp_path / "toy" / "manifest.parquet")
    res = CliRunner().invoke(app, ["extract", "--dataset", "toy", "--data-root", str(tmp_path), "--executor", "local",
                                   "--clip-model", "tiny-random", "--no-progress"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "missing_file: 1" in res.output and "1 samples in shards" in res.output
    samples, errors = assert_exact(tmp_path / "toy" / "features", rows)
    run_config = json.loads((tmp_path / "toy" / "features" / "run_config.json").read_text())
    assert run_config["config"]["manifest"] == str(tmp_path / "toy" / "manifest.parquet")
    assert run_config["config"]["clip"]["model"] == "tiny-random"


def test_a_second_run_on_a_busy_out_is_refused_and_a_stale_lock_is_taken_over(media, tmp_path):
    """Two runs on one --out used to both exit 0 with every error twice: the second is now refused in one line."""
    import socket

    from pipeline.extract.lock import LOCK

    manifest = write_rows(good_rows(media)[:1], tmp_path / "manifest.parquet")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": "now"}))
    with pytest.raises(ExtractError, match="being written by another extract run"):
        run_extract(config(manifest, out, executor="local", tasks=1))
    assert not (out / "index.json").exists()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a holder killed with -9 leaves its lock behind: its pid no longer exists
    (out / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": gone.pid, "started": "before"}))
    summary = run_extract(config(manifest, out, executor="local", tasks=1))
    assert summary.samples == 1 and (out / "index.json").exists() and not (out / LOCK).exists()
