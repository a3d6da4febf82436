"""Extract's driver at growing manifest sizes: planning time per row, driver peak RSS, a rerun with nothing left.

For each `--rows` N: a synthetic manifest with the real schema (manifests.schema.arrow_schema; an InternVid-like
row: a window, one event, a caption; written in row groups of `--row-group` rows), and a finished run folder for it
as `vtl-pipeline extract` leaves one (tasks/plan.json, one marker and one shard per task, default task count; the
shards are empty files: planning and resume read names and markers, never shard bytes). Each phase runs in a fresh
process, which reports its wall time and its peak RSS (ru_maxrss):

- `plan`: what a run's driver does before any task: the row count from the footer, the manifest's sha256, the
  streaming check of every row (keys, kinds, windows, repeated keys), the task slices.
- `task`: one task reading its own rows (the manifest's last slice: the farthest from the file's start).
- `rerun-first`: `run_extract --executor ray` on the finished folder whose plan has not recorded the manifest check
  yet and whose index.json is missing (as a run that stopped after its last marker): check, resume, index.
- `rerun`: the same command again: nothing left (markers read, index present; neither Ray nor a model starts).
- `before` (with `--before`): the driver's former manifest load, a `ManifestRow` per row and back to a dict.

The last line is `ratio=X.XX`: driver peak RSS of the rerun at the largest N over the smallest.

    .venv/bin/python bench/bench_extract_plan.py --rows 100000,1000000 --workdir /tmp/vtl-bench-plan
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = ("plan", "task", "rerun-first", "rerun")


def make_manifest(path: Path, rows: int, row_group: int) -> Path:
    """N rows of the manifest schema, one row group at a time (no ManifestRow per row: this is the benchmark's
    input, not what it measures)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from manifests.schema import arrow_schema

    schema = arrow_schema().with_metadata({"vtl.provenance": "{}", "vtl.stats": "{}"})
    with pq.ParquetWriter(path, schema) as writer:
        for lo in range(0, rows, row_group):
            ids = range(lo, min(lo + row_group, rows))
            n = len(ids)
            cols = {
                "key": [f"v{i:09d}_{i % 7}" for i in ids], "dataset": ["internvid"] * n, "kind": ["video"] * n,
                "media": [f"videos/yt{i // 4:08d}.mp4" for i in ids],
                "window": [{"start": float(i % 50), "end": i % 50 + 9.5} for i in ids], "duration": [9.5] * n,
                "events": [[{"start": 0.0, "end": 9.5, "caption": f"a person does thing {i % 1000}"}] for i in ids],
                "caption": [None] * n, "source_id": [f"yt{i // 4:08d}" for i in ids], "flags": [[]] * n,
            }
            writer.write_table(pa.Table.from_pydict(cols, schema=schema), row_group_size=row_group)
    return path


def make_finished_run(out: Path, manifest: Path, rows: int) -> int:
    """A run folder whose every task has its marker and shard (default task count); returns the task count."""
    from infra import storage
    from pipeline.extract.clip import ClipConfig, encoder_id
    from pipeline.extract.job import default_tasks, manifest_sha256
    from pipeline.extract.tasks import TaskStore, shard_name

    tasks = default_tasks(rows)
    store = TaskStore(str(out), {"num_tasks": tasks, "manifest_sha256": manifest_sha256(str(manifest)),
                                 "encoder": encoder_id(ClipConfig(model="tiny-random")), "rows": rows})
    (out / "tasks").mkdir(parents=True)
    storage.write_json_atomic(store.plan_file, store.plan)
    for t in range(tasks):
        n = (t + 1) * rows // tasks - t * rows // tasks
        name = shard_name(t, 0)
        (out / name).write_bytes(b"")
        keys = [f"k{t}_{i}" for i in range(n)]
        (out / "tasks" / f"task-{t:05d}.done.json").write_text(json.dumps(
            {"task": t, "rows": n, "errors": 0, "node": None,
             "shards": [{"name": name, "samples": n, "bytes": 0, "sha256": "0" * 64, "keys": keys}]}))
    return tasks


def phase(name: str, manifest: str, out: str) -> dict:
    """One phase, in this (fresh) process."""
    t0 = time.perf_counter()
    extra = {}
    if name == "plan":
        from pipeline.extract.job import default_tasks, manifest_sha256
        from pipeline.extract.manifest_rows import check_manifest, count_rows, slices

        rows = count_rows(manifest)
        manifest_sha256(manifest)
        check_manifest(manifest, rows)
        extra["tasks"] = len(slices(manifest, rows, default_tasks(rows)))
    elif name == "task":
        from pipeline.extract.job import default_tasks
        from pipeline.extract.manifest_rows import count_rows, slices

        rows = count_rows(manifest)
        extra["task_rows"] = len(list(slices(manifest, rows, default_tasks(rows))[-1]))
    elif name.startswith("rerun"):
        from pipeline.extract.clip import ClipConfig
        from pipeline.extract.config import ExtractConfig
        from pipeline.extract.job import run_extract

        s = run_extract(ExtractConfig(manifest=manifest, out=out, executor="ray", progress=False,
                                      clip=ClipConfig(model="tiny-random")))
        assert s.tasks_run == 0 and s.samples == s.rows, s
        extra.update(tasks_skipped=s.tasks_skipped, ray_started="ray" in sys.modules and _ray_up())
    elif name.startswith("build:"):
        _, rows, row_group = name.split(":")
        make_finished_run(Path(out), make_manifest(Path(manifest), int(rows), int(row_group)), int(rows))
    elif name == "before":
        from manifests.schema import iter_manifest

        extra["rows"] = len([r.to_json() for r in iter_manifest(manifest)])
    return {"phase": name, "seconds": time.perf_counter() - t0,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}


def _ray_up() -> bool:
    import ray

    return ray.is_initialized()


def run_phase(name: str, manifest: Path, out: Path) -> dict:
    """A phase in a fresh process. This process stays small (the manifest is built in a child too): Linux carries
    a process's peak RSS over into what it runs."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([sys.executable, __file__, "--phase", name, str(manifest), str(out)], env=env,
                         capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"phase {name} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def measure(rows: int, workdir: Path, row_group: int, before: bool) -> list[dict]:
    d = workdir / f"n{rows}"
    if d.exists():
        import shutil

        shutil.rmtree(d)
    d.mkdir(parents=True)
    manifest = d / "manifest.parquet"
    run_phase(f"build:{rows}:{row_group}", manifest, d / "out")
    results = [run_phase(p, manifest, d / "out") for p in PHASES + (("before",) if before else ())]
    return [{"rows": rows, **r} for r in results]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="100000,1000000", help="comma-separated manifest sizes")
    ap.add_argument("--workdir", default="/tmp/vtl-bench-plan")
    ap.add_argument("--row-group", type=int, default=131072, help="Parquet rows per row group")
    ap.add_argument("--before", action="store_true", help="also time the former manifest load (slow at 1M rows)")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON list")
    ap.add_argument("--phase", nargs=3, metavar=("NAME", "MANIFEST", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase(*args.phase)))
        return
    if "://" in args.workdir:  # local manifests, markers and child processes: an object-store URL is not a folder
        ap.error(f"--workdir must be a local folder, got {args.workdir}")
    sizes = [int(x) for x in args.rows.split(",")]
    load = os.getloadavg()[0]
    results = [r for n in sizes for r in measure(n, Path(args.workdir), args.row_group, args.before)]
    if args.json:
        print(json.dumps(results))
    else:
        print(f"load {load:.1f} → {os.getloadavg()[0]:.1f}")
        print(f"{'rows':>9} {'phase':<12} {'seconds':>9} {'µs/row':>8} {'peak RSS MB':>12}")
        for r in results:
            print(f"{r['rows']:>9} {r['phase']:<12} {r['seconds']:>9.2f} {1e6 * r['seconds'] / r['rows']:>8.2f} "
                  f"{r['rss_mb']:>12.0f}")
    rss = {r["rows"]: r["rss_mb"] for r in results if r["phase"] == "rerun"}
    print(f"ratio={rss[max(sizes)] / rss[min(sizes)]:.2f}")


if __name__ == "__main__":
    main()
