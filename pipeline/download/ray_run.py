"""`--executor ray`: the download's sources over Ray tasks (a local Ray, or the cluster at `--address`).

The manifest's sources, in the order their first row appears, are cut into `--tasks` contiguous slices (default: one
per CPU of the cluster); task t fetches the sources of slice t that still have rows to do, with `fetch_groups`, the
function the local executor runs: the same files, the same per-row markers, so a folder started on Ray can be
finished locally and the other way round, and a rerun skips what is done whichever executor did it. A slice is fixed
by the manifest and the task count alone, and rows sharing a source (InternVid's windows) are in one task, fetched
once.

Politeness on a cluster: each task holds its own per-host limit, so one host sees at most `--per-host` downloads
from one task and `--per-host` × (tasks running at once) from the whole run; the tasks running at once are the
cluster's CPUs (`--num-cpus` for a local Ray). For a strict cluster-wide limit on one host, run with `--per-host 1`
and a small `--num-cpus`, or the local executor.

A task killed with its worker is retried by Ray (`TASK_RETRIES`); it skips the rows whose markers its first attempt
wrote. A task that still fails leaves its rows without a marker: the run exits 1 and a rerun does them.
"""
from __future__ import annotations

import sys
from typing import Callable

from infra import storage
from infra.local_ray import connect
from manifests.schema import ManifestRow
from pipeline.download.sources import Source
from pipeline.download.spool import clean_spool

TASK_RETRIES = 3
_WATCHDOGS: list = []  # a local Ray's watchdog, held as long as this process lives (the Ray it started does too)


def slices(order: list[Source], tasks: int) -> list[list[Source]]:
    """Fixed contiguous slices: task t gets sources [t·n/T, (t+1)·n/T). Same manifest and T → same slices."""
    n = len(order)
    return [order[t * n // tasks:(t + 1) * n // tasks] for t in range(tasks)]


Work = list[tuple[Source, list[ManifestRow]]]


def download_task(fetch: Callable, folder, work: Work) -> dict[str, dict]:
    """One Ray task: its sources' rows that have no marker yet (a retried task does only the rest) through `fetch`
    (run.fetch_groups, passed in: this module is imported by run.py); each row's marker record."""
    clean_spool()  # this node's leftovers of a killed run
    results, left = {}, []
    for source, rows in work:
        todo = []
        for row in rows:
            marker = folder.marker(row.key)
            if storage.exists(marker):
                results[row.key] = storage.read_json(marker)
            else:
                todo.append(row)
        if todo:
            left.append((source, todo))
    results.update(fetch(folder, left, progress=False))
    return results


def run_on_ray(fetch: Callable, folder, groups: dict[Source, list[ManifestRow]],
               order: list[Source]) -> dict[str, dict]:
    """The pending `groups` (of run.RunFolder `folder`) over Ray tasks, sliced by `order` (every source of the
    manifest); the marker records. infra.local_ray.ClusterJoinError when --address cannot be joined."""
    import ray

    cfg = folder.cfg
    watchdog = connect(cfg.address, cfg.num_cpus)
    if watchdog is not None:
        _WATCHDOGS.append(watchdog)
    count = cfg.tasks or max(1, int(ray.cluster_resources().get("CPU", 1)))
    work = [[(s, groups[s]) for s in part if s in groups] for part in slices(order, count)]
    remote = ray.remote(download_task).options(num_cpus=1, max_retries=TASK_RETRIES)
    folder_ref = ray.put(folder)
    refs = {remote.remote(fetch, folder_ref, w): t for t, w in enumerate(work) if w}
    total, results = len(refs), {}
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        for ref in done:
            task = refs.pop(ref)
            try:
                results.update(ray.get(ref))
            except ray.exceptions.RayError as exc:
                first = str(exc).splitlines()[0] if str(exc) else ""
                print(f"download: Ray task {task} failed ({type(exc).__name__}: {first}); a rerun does its rows",
                      file=sys.stderr)
            if cfg.progress:
                print(f"download: {total - len(refs)}/{total} Ray tasks", file=sys.stderr)
    return results
