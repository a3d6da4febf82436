"""extract on Ray (one local instance for the module): same features as in-process, real clips, a killed worker."""
from __future__ import annotations

import glob
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support.extract import assert_exact, bad_rows, config, good_rows, make_media, write_rows

from manifests.schema import ManifestRow, make_key
from pipeline.contract.shards import read_index
from pipeline.extract.job import run_extract

pytestmark = pytest.mark.ray
from support.real_data import REAL as REAL_DIR

REAL = sorted(glob.glob(f"{REAL_DIR}/*.mov") + glob.glob(f"{REAL_DIR}/*.mp4"))


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    return make_media(tmp_path_factory.mktemp("media"))


@pytest.mark.parametrize("encoders", [None, 1], ids=["in-task (CPU default)", "one encoder actor"])
def test_ray_equals_in_process_and_real_clips_verify(ray_local, media, tmp_path, encoders):
    import json

    import psutil

    real = [ManifestRow(key=make_key(Path(p).stem), dataset="real", kind="video", media=p) for p in REAL]
    rows = real + good_rows(media) + bad_rows(media, tmp_path)
    manifest = write_rows(rows, tmp_path / "manifest.parquet")
    local = run_extract(config(manifest, tmp_path / "local", executor="local", tasks=2))
    on_ray = run_extract(config(manifest, tmp_path / "ray", executor="ray", tasks=2, samples_per_shard=3,
                                encoders=encoders))
    assert not on_ray.failed and on_ray.errors == local.errors
    run = json.loads((tmp_path / "ray" / "run_config.json").read_text())
    assert run["encoder_plan"]["actors"] == (0 if encoders is None else 1)  # no GPU here: in the tasks by default
    assert run["encoder_plan"]["where"] == ("in_task" if encoders is None else "actors")
    if encoders is None:  # no actor process was started (the module's first run: nothing earlier left one)
        # only this test's Ray (descendants of this process): other Ray instances may run on a shared machine
        titles = []
        for proc in psutil.Process().children(recursive=True):
            try:
                titles.append(" ".join(proc.cmdline()))
            except psutil.Error:  # exited meanwhile
                pass
        assert not [t for t in titles if "ray::StepActor" in t]
    assert 0 < on_ray.startup_seconds < on_ray.seconds  # Ray workers and the encoder ready before the tasks ran
    a, _ = assert_exact(tmp_path / "local", rows)
    b, _ = assert_exact(tmp_path / "ray", rows)
    assert set(a) == set(b) and len(b) == len(real) + 5
    for key in a:
        assert np.array_equal(a[key].features, b[key].features), key
        assert a[key].meta == b[key].meta, key
    for r in real:
        assert b[r.key].meta["decoder"] == "decord" and b[r.key].features.shape == (100, 768)
    from pipeline.inspect.verify import verify

    result = verify(tmp_path / "ray", read_index(tmp_path / "ray"))
    assert result.ok, [str(p) for p in result.problems]


def _kill_first_task_worker(stop: threading.Event, killed: list) -> None:
    """kill -9 the first Ray worker seen running a manifest task (its process title is `ray::_ray_task`)."""
    import psutil

    while not stop.is_set() and not killed:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if "ray::_ray_task" in " ".join(proc.info["cmdline"] or ()):
                os.kill(proc.info["pid"], signal.SIGKILL)
                killed.append(proc.info["pid"])
                return
        time.sleep(0.05)


def test_killed_worker_is_retried_with_exact_accounting(ray_local, media, tmp_path):
    rows = [r for r in good_rows(media)]
    rows = [ManifestRow(**{**r.__dict__, "key": f"{r.key}_{i}"}) for i in range(3) for r in rows]
    manifest = write_rows(rows, tmp_path / "manifest.parquet")
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_task_worker, args=(stop, killed), daemon=True)
    killer.start()
    try:
        summary = run_extract(config(manifest, tmp_path / "out", executor="ray", tasks=3, samples_per_shard=1))
    finally:
        stop.set()
        killer.join()
    assert killed, "no task worker was seen running"
    assert not summary.failed and summary.samples == len(rows)
    assert_exact(tmp_path / "out", rows)


def test_unloadable_encoder_stops_before_any_task(ray_local, media, tmp_path):
    from pipeline.extract.clip import ClipConfig
    from pipeline.extract.job import ExtractError

    weights = tmp_path / "ViT-L-14.pt"
    weights.write_bytes(b"junk")
    manifest = write_rows(good_rows(media)[:2], tmp_path / "manifest.parquet")
    cfg = config(manifest, tmp_path / "out", executor="ray", tasks=2,
                 clip=ClipConfig(model="tiny-random", weights=str(weights)))
    with pytest.raises(ExtractError, match="cannot read CLIP weights") as e:
        run_extract(cfg)
    assert "Traceback" not in str(e.value) and "ray::" not in str(e.value)
    assert not (tmp_path / "out" / "tasks").exists() and not list((tmp_path / "out").glob("*.tar"))
