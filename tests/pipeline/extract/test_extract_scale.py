"""Extract's driver at scale: tasks read their own rows, the manifest check streams, a task's start looks only at its
own names, a rerun with nothing left starts nothing, and planning memory does not grow with the manifest."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.extract import assert_exact, bad_rows, config, good_rows, make_media, write_rows

from infra import storage
from manifests.schema import ManifestRow, arrow_schema, iter_manifest
from pipeline.extract import job, manifest_rows
from pipeline.extract.config import ExtractError
from pipeline.extract.manifest_rows import check_manifest, read_rows, slices
from pipeline.extract.tasks import TaskStore

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    return make_media(tmp_path_factory.mktemp("media"))


def _records(rows: list[ManifestRow]) -> list[dict]:
    out = []
    for r in rows:
        d = r.to_json()
        d["window"] = {"start": r.window[0], "end": r.window[1]} if r.window else None
        out.append(d)
    return out


def _parquet(path: Path, records: list[dict], row_group: int = 1000) -> str:
    """Written with pyarrow directly: write_manifest refuses what these tests need the driver to refuse."""
    pq.write_table(pa.Table.from_pylist(records, schema=arrow_schema()), path, row_group_size=row_group)
    return str(path)


def test_a_task_reads_exactly_its_rows_across_row_groups(media, tmp_path):
    rows = good_rows(media) + bad_rows(media, tmp_path)
    rows.append(ManifestRow(key="relative", dataset="synth", kind="video", media="clips/../v.mp4", window=(1.0, 2.0)))
    path = _parquet(tmp_path / "m.parquet", _records(rows), row_group=3)  # slices straddle row groups
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    base = "/driver/folder"
    expected = [r.to_json() for r in iter_manifest(path)]  # the former driver's rows, media made absolute there
    for d in expected:
        d["media"] = d["media"] if "://" in d["media"] else os.path.normpath(os.path.join(base, d["media"]))
    assert expected[-1]["media"] == "/driver/folder/v.mp4"
    for a, b in [(0, 11), (2, 7), (3, 6), (10, 11), (5, 5)]:
        assert read_rows(path, a, b, base) == expected[a:b], (a, b)
    parts = slices(path, len(rows), 4, base)
    assert [len(s) for s in parts] == [2, 3, 3, 3] and [r for s in parts for r in s] == expected


def test_the_streaming_check_refuses_what_manifest_rows_refuse(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest_rows, "CHECK_BATCH", 2)  # repeats and bad values found across batches
    good = {"key": "a", "dataset": "d", "kind": "video", "media": "/x.mp4", "window": None, "duration": 1.0,
            "events": [], "caption": None, "source_id": None, "flags": []}
    cases = [
        ([{**good, "key": k} for k in "abcdb"], r"repeats the keys \['b'\]"),
        ([{**good, "key": k} for k in "abc"] + [{**good, "key": "d.e"}], "invalid key 'd.e'"),
        ([{**good, "key": k} for k in "abc"] + [{**good, "key": "d", "kind": "audio"}], "kind must be one of"),
        ([good, {**good, "key": "b", "window": {"start": 5.0, "end": 2.0}}], r"window \{'start': 5.0"),
    ]
    for i, (records, says) in enumerate(cases):
        with pytest.raises(ExtractError, match=says):
            check_manifest(_parquet(tmp_path / f"m{i}.parquet", records), len(records))
    mixed = [{**good, "key": "v"}, {**good, "key": "i", "kind": "image"},
             {**good, "key": "w", "window": {"start": 1.0, "end": 2.0}}]
    assert check_manifest(_parquet(tmp_path / "ok.parquet", mixed), 3) == ["image", "video"]


def test_a_task_start_looks_only_at_its_own_names(tmp_path, monkeypatch):
    out = tmp_path / "out"
    (out / "tasks").mkdir(parents=True)
    mine = ["task-00007-000000.tar", "task-00007-000001.tar", ".task-00007-000002.tar.tmp", "tasks/task-00007.errors.jsonl"]
    others = ["task-00008-000000.tar", "task-00070-000000.tar", ".task-00008-000001.tar.tmp", "tasks/task-00008.errors.jsonl"]
    for name in mine + others:
        (out / name).write_bytes(b"x")

    def no_listing(location):
        raise AssertionError(f"a task listed {location}")

    monkeypatch.setattr(storage, "listdir", no_listing)
    TaskStore(str(out), {"num_tasks": 100}).discard(7)
    assert not any((out / n).exists() for n in mine) and all((out / n).exists() for n in others)


def test_a_rerun_with_nothing_left_starts_nothing(media, tmp_path, monkeypatch):
    rows = good_rows(media)[-1:] + bad_rows(media, tmp_path)[:1]  # an image and a missing file: quick
    manifest = write_rows(rows, tmp_path / "manifest.parquet")
    out = tmp_path / "out"
    first = job.run_extract(config(manifest, out, executor="local", tasks=2))
    assert json.loads((out / "tasks" / "plan.json").read_text())["kinds"] == ["image", "video"]
    index = json.loads((out / "index.json").read_text())

    def no_executor(cfg):
        raise AssertionError("an executor started with nothing left to run")

    monkeypatch.setattr(job, "make_executor", no_executor)
    monkeypatch.setattr(job, "check_manifest", no_executor)  # the plan recorded the check
    again = job.run_extract(config(manifest, out, executor="ray", tasks=2))
    assert (again.tasks_run, again.tasks_skipped, again.samples, again.errors) == (0, 2, 1, first.errors)
    # A folder from before the plan recorded the check, stopped after its last marker: checked, then indexed.
    plan = json.loads((out / "tasks" / "plan.json").read_text())
    del plan["kinds"]
    (out / "tasks" / "plan.json").write_text(json.dumps(plan))
    (out / "index.json").unlink()
    monkeypatch.setattr(job, "check_manifest", check_manifest)
    again = job.run_extract(config(manifest, out, executor="ray", tasks=2))
    assert again.samples == 1 and again.errors == first.errors
    assert json.loads((out / "index.json").read_text())["shards"] == index["shards"]
    assert json.loads((out / "tasks" / "plan.json").read_text())["kinds"] == ["image", "video"]  # checked once
    assert_exact(out, rows)


def test_planning_memory_does_not_grow_with_rows(tmp_path):
    """Driver peak RSS (planning, and a rerun with nothing left) at 10× the rows: ≤ 1.5×, and under 1.5 KB a row of growth
    (the former driver, a ManifestRow per row then a dict, grew 2.9 KB a row between these sizes)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_extract_plan.py"), "--rows", "1000,10000",
                          "--workdir", str(tmp_path), "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads(res.stdout.splitlines()[0])
    rss = {(r["phase"], r["rows"]): r["rss_mb"] for r in results}
    for name in ("plan", "rerun"):
        small, large = rss[(name, 1000)], rss[(name, 10000)]
        assert large <= 1.5 * small, (name, small, large)
        assert (large - small) * 2**20 / 9000 < 1536, f"{name}: {(large - small) * 2**20 / 9000:.0f} B a row"
    assert not any(r.get("ray_started") for r in results)
