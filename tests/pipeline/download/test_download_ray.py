"""`vtl-pipeline download --executor ray` (a local Ray with 2 CPUs): the same files, rows and error records as the
local executor; a folder either one finished is complete for the other (a rerun fetches nothing), and a Ray run
finishes a folder a local run left unfinished."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from download_helpers import assert_exact, media_server, outputs, write_rows

from manifests.schema import ManifestRow
from pipeline.download.config import DownloadConfig
from pipeline.download.ray_run import slices
from pipeline.download.run import download
from pipeline.download.sources import Source
from pipeline.synth.media import frame_counter_video


def test_slices_are_fixed_and_cover_every_source_once():
    order = [Source(f"http://h/{i}.mp4", "http") for i in range(7)]
    parts = slices(order, 3)
    assert [len(p) for p in parts] == [2, 2, 3] and sum(parts, []) == order
    assert slices(order, 3) == parts and slices(order[:1], 3) == [[], [], order[:1]]


@pytest.mark.ray
def test_ray_run_equals_local_run_and_reruns_fetch_nothing(tmp_path):
    import ray

    d = tmp_path / "videos"
    d.mkdir()
    videos = {"a": frame_counter_video(d / "a.mp4", 60, 10.0), "b": frame_counter_video(d / "b.mp4", 40, 20.0),
              "c": frame_counter_video(d / "c.mp4", 30, 10.0)}
    with media_server(videos) as srv:
        u = srv.url
        rows = [ManifestRow("a_whole", "t", "video", f"{u}/v/a.mp4"),
                ManifestRow("a_w1", "t", "video", f"{u}/v/a.mp4", window=(1.0, 2.5), duration=1.5),
                ManifestRow("b_page", "t", "video", f"{u}/page/b"),
                ManifestRow("gone", "t", "video", f"{u}/missing.mp4"),
                ManifestRow("c_w", "t", "video", f"{u}/v/c.mp4", window=(0.5, 2.0), duration=1.5),
                ManifestRow("html", "t", "video", f"{u}/html.mp4"),
                ManifestRow("a_w2", "t", "video", f"{u}/v/a.mp4", window=(3.0, 4.0), duration=1.0),
                ManifestRow("short", "t", "video", f"{u}/truncated.mp4")]
        manifest = str(write_rows(rows, tmp_path / "in.parquet"))
        local_cfg = DownloadConfig(manifest=manifest, out=str(tmp_path / "local"), retries=1, backoff=0.05,
                                   progress=False)
        ray_cfg = replace(local_cfg, out=str(tmp_path / "ray"), executor="ray", num_cpus=2, tasks=3)
        try:
            local = download(local_cfg, {})
            before = dict(srv.hits)
            on_ray = download(ray_cfg, {})
            fetched = {p: n - before.get(p, 0) for p, n in srv.hits.items() if n != before.get(p, 0)}
            after = dict(srv.hits)
            ray_again = download(ray_cfg, {})
            local_on_ray = download(replace(ray_cfg, executor="local", num_cpus=None, tasks=None), {})
            assert dict(srv.hits) == after, "a rerun (Ray or local) on a finished folder fetched something"
            for name in ("rows/c_w.json", "media/c_w.mp4", "rows/gone.json"):  # as if killed before these rows
                (tmp_path / "local" / name).unlink()
            finish_local = download(replace(ray_cfg, out=local_cfg.out), {})
            assert {p: n - after[p] for p, n in srv.hits.items() if n != after[p]} == {"/v/c.mp4": 1,
                                                                                     "/missing.mp4": 1}
        finally:
            ray.shutdown()
    assert fetched == {p: n for p, n in before.items()}, "the Ray run made the same requests as the local one"
    assert fetched["/v/a.mp4"] == 1, "three rows of one source: one fetch, in one task"
    assert (on_ray.files, on_ray.errors, on_ray.exit_code) == (local.files, local.errors, 0)
    assert (ray_again.fetched_now, local_on_ray.fetched_now, on_ray.fetched_now) == (0, 0, 6)
    assert (finish_local.fetched_now, finish_local.files, finish_local.errors) == (2, local.files, local.errors)
    keys = [r.key for r in rows]
    assert_exact(tmp_path / "ray", keys)
    (local_rows, local_errors), (ray_rows, ray_errors) = outputs(tmp_path / "local"), outputs(tmp_path / "ray")
    assert ray_errors == local_errors and {e["key"] for e in ray_errors} == {"gone", "html", "short"}
    assert list(ray_rows) == list(local_rows) == [k for k in keys if k in ray_rows], "input order"
    for key, row in ray_rows.items():
        assert replace(row, media=Path(row.media).name) == replace(local_rows[key], media=Path(row.media).name)
        assert Path(row.media).read_bytes() == Path(local_rows[key].media).read_bytes(), key
        assert Path(row.media).parent == tmp_path / "ray/media"
