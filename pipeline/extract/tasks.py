"""The run folder of an extract, owned by one class: the fixed task slices, the plan, resume, markers, the index.

Resumable by construction (STYLE.md 3): task t always owns the same manifest slice; it writes its shards
(`task-00007-000000.tar`, numbered from 0, each committed whole) and its error file (`tasks/task-00007.errors.jsonl`),
then its marker `tasks/task-00007.done.json` listing its shards and error count. A task without a marker is
unfinished: its files are discarded and it runs again from the start. `errors.jsonl` and `index.json` are written
after every task has its marker, so every manifest row ends up exactly once in shards or errors.

What each step costs: a run's start lists the folder and `tasks/` once and reads the markers (a thread pool: on an
object store each read is a request), and removes what the unfinished tasks left. A task's start looks only at its
own names (`discard`: its shards counted up from 0, its temporary tar, its error file), never at the folder.

The folder is a storage location (infra/storage.py): a local path or an `s3://`/`gs://` prefix. Every
file here is committed atomically there (local rename, or one PUT of the finished object), so a marker, a shard or
the index is either complete or absent, on disk and in an object store alike.
"""
from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

from infra import storage
from pipeline.contract.shards import ERRORS, INDEX, ShardInfo, write_index

TASKS_DIR = "tasks"
PLAN = "plan.json"
PLAN_FIELDS = (("num_tasks", "task count (--tasks)"), ("manifest_sha256", "manifest"), ("encoder", "encoder"))
MARKER_SUFFIX = ".done.json"
READERS = 16
"""Markers read at once at a run's start (an object store answers each read in tens of milliseconds)."""


class PlanMismatch(RuntimeError):
    """A rerun whose task count, manifest or encoder differs from the run that started the folder."""


@dataclass(frozen=True)
class Task:
    """A task and its rows: a `ManifestSlice` (pipeline/extract/manifest_rows.py, read when the task runs) or, in
    tests, a list."""

    task_id: int
    rows: Sequence[dict]


def task_name(task_id: int) -> str:
    return f"task-{task_id:05d}"


def shard_name(task_id: int, n: int) -> str:
    """The n-th shard of a task, as `ShardWriter` names it with the task's prefix."""
    return f"{task_name(task_id)}-{n:06d}.tar"


def is_task_leftover(name: str, task_id: int) -> bool:
    """A shard or a temporary tar of the task."""
    tn = task_name(task_id)
    return (name.startswith(f"{tn}-") and name.endswith(".tar")) or \
        (name.startswith(f".{tn}-") and name.endswith(".tar.tmp"))


@dataclass(frozen=True)
class RunCounts:
    """What a finished run holds: samples in shards and error records by reason."""

    samples: int
    errors: Counter


@dataclass(frozen=True)
class TaskStore:
    """The state of one run folder: its plan, which tasks are done, and the files a task writes.

    `out` is a resolved storage location; `plan` holds num_tasks, manifest_sha256, encoder and rows. The store is
    small and picklable: executors ship it to workers, where `discard` and `mark_done` run around each task.
    """

    out: str
    plan: dict

    # --- where a task's files go ------------------------------------------------------------------------------
    def shard_prefix(self, task_id: int) -> str:
        return task_name(task_id)

    def errors_file(self, task_id: int) -> str:
        return storage.join(self.out, TASKS_DIR, f"{task_name(task_id)}.errors.jsonl")

    def marker_file(self, task_id: int) -> str:
        return storage.join(self.out, TASKS_DIR, f"{task_name(task_id)}.done.json")

    @property
    def plan_file(self) -> str:
        return storage.join(self.out, TASKS_DIR, PLAN)

    # --- the plan -----------------------------------------------------------------------------------------------
    def old_plan(self) -> dict | None:
        """The plan the folder was started with, or None (a new folder)."""
        try:
            return storage.read_json(self.plan_file)
        except FileNotFoundError:
            return None

    def check(self) -> bool:
        """True when the folder holds a run with this plan (resume), False when new; PlanMismatch when it differs."""
        old = self.old_plan()
        if old is None:
            return False
        for name, what in PLAN_FIELDS:
            if old.get(name) != self.plan.get(name):
                raise PlanMismatch(f"{self.out} was started with a different {what}: {old.get(name)!r} there, "
                                   f"{self.plan.get(name)!r} now. Rerun with the same settings to resume, or use a "
                                   f"new --out.")
        return True

    def start(self) -> None:
        """Record the plan of a new run (after the models loaded: a run that cannot start leaves no plan), or the
        fields an older plan of this run lacks (`kinds`: the manifest was checked)."""
        if not self.check() or set(self.plan) - set(self.old_plan()):
            storage.write_json_atomic(self.plan_file, self.plan)

    # --- tasks ------------------------------------------------------------------------------------------------
    def resume(self, tasks: list[Task]) -> tuple[list[Task], dict[int, dict] | None]:
        """(the tasks without a valid marker, the valid markers by task; None for a finished folder): one listing of
        the folder and one of `tasks/`, then one read per marker; what the unfinished tasks left is removed here.
        A folder whose index.json is there, with every marker and every indexed shard, is finished: nothing is read.
        Work left makes the folder unfinished again: its stale index.json goes first."""
        names = set(storage.listdir(self.out))
        listed = set(storage.listdir(storage.join(self.out, TASKS_DIR)))
        if INDEX in names and self._finished(names, listed):
            return [], None
        done = self._markers(range(self.plan["num_tasks"]), names, listed)
        todo = [t for t in tasks if t.task_id not in done]
        if todo and INDEX in names:
            storage.remove(storage.join(self.out, INDEX))
        unfinished = {t.task_id for t in todo}
        for name in names:
            if _task_of(name) in unfinished:
                storage.remove(storage.join(self.out, name))
        return todo, done

    def _finished(self, names: set[str], listed: set[str]) -> bool:
        if not all(task_name(t) + MARKER_SUFFIX in listed for t in range(self.plan["num_tasks"])):
            return False
        try:
            return all(s["name"] in names for s in storage.read_json(storage.join(self.out, INDEX))["shards"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return False

    def _markers(self, task_ids, names: set[str], listed: set[str] | None = None) -> dict[int, dict]:
        """The valid markers among `task_ids` (those whose marker file `tasks/` lists), read READERS at once."""
        if listed is None:
            listed = set(storage.listdir(storage.join(self.out, TASKS_DIR)))
        ids = [t for t in task_ids if task_name(t) + MARKER_SUFFIX in listed]
        with ThreadPoolExecutor(READERS) as pool:
            found = list(pool.map(lambda t: self._marker(t, names), ids))
        return {t: m for t, m in zip(ids, found) if m is not None}

    def _marker(self, task_id: int, names: set[str]) -> dict | None:
        """What the index needs of the task's marker (its shards without their keys, its error count: a run's
        driver holds every marker) when the task is complete and all its shards are present; None otherwise."""
        path = self.marker_file(task_id)
        try:
            marker = json.loads(storage.read_bytes(path))
        except FileNotFoundError:
            return None
        if not all(s["name"] in names for s in marker["shards"]):
            storage.remove(path)
            return None
        return {"errors": marker["errors"],
                "shards": [{k: s[k] for k in ("name", "samples", "bytes", "sha256")} for s in marker["shards"]]}

    def discard(self, task_id: int) -> None:
        """Remove what an earlier attempt of this task left, looking only at the task's own names: its shards
        (numbered from 0, each committed after the one before), the temporary tar of the next one, its error file.
        Older leftovers were removed by the run's `resume`. Last shard first: an interrupted discard leaves 0..k."""
        n = 0
        while storage.exists(storage.join(self.out, shard_name(task_id, n))):
            n += 1
        if not storage.is_remote(self.out):  # an object store's temporary tar is a spool file on the worker
            storage.remove(storage.join(self.out, f".{shard_name(task_id, n)}.tmp"))
        for k in reversed(range(n)):
            storage.remove(storage.join(self.out, shard_name(task_id, k)))
        storage.remove(self.errors_file(task_id))

    def mark_done(self, task: Task, results: list[dict]) -> str:
        """Write the task's marker (after its shards and error file): the steps' results merged, and the row count."""
        merged = {k: v for r in results for k, v in r.items()}
        return storage.write_json_atomic(self.marker_file(task.task_id),
                                         {"task": task.task_id, "rows": len(task.rows), **merged})

    # --- the end of a run ---------------------------------------------------------------------------------------
    def finalize(self, done: dict[int, dict], *, num_frames: int | None, dim: int, extra: dict) -> RunCounts:
        """Merge the per-task error files into errors.jsonl, then write index.json (last); returns the counts.
        `done`: the markers `resume` read; the markers of the tasks run since are read here."""
        names = set(storage.listdir(self.out))
        num_tasks = self.plan["num_tasks"]
        done = {**done, **self._markers([t for t in range(num_tasks) if t not in done], names)}
        if len(done) < num_tasks or any(s["name"] not in names for m in done.values() for s in m["shards"]):
            raise RuntimeError("finalize called with unfinished tasks")
        reasons = self._merge_errors([t for t in range(num_tasks) if done[t]["errors"]])
        shards = [ShardInfo(s["name"], s["samples"], s["bytes"], s["sha256"])
                  for t in range(num_tasks) for s in done[t]["shards"]]
        write_index(self.out, shards, encoder=self.plan["encoder"], num_frames=num_frames, dim=dim,
                    manifest_hash=self.plan["manifest_sha256"], errors=sum(m["errors"] for m in done.values()),
                    extra=extra)
        return RunCounts(sum(s.samples for s in shards), reasons)

    def _merge_errors(self, task_ids: list[int]) -> Counter:
        """errors.jsonl from the tasks' error files, in task order, streamed; the error records by reason."""
        reasons, pending = Counter(), storage.AtomicFile(storage.join(self.out, ERRORS))
        try:
            with open(pending.local, "w") as f:
                for t in task_ids:
                    for line in storage.read_text(self.errors_file(t)).splitlines():
                        if line.strip():
                            f.write(line + "\n")
                            reasons[json.loads(line)["reason"]] += 1
                storage.fsync_file(f)
            pending.commit()
        except BaseException:
            pending.discard()
            raise
        return reasons

    def counts(self) -> RunCounts:
        """What a finished run (index.json written) holds, from its index and errors.jsonl."""
        index = storage.read_json(storage.join(self.out, INDEX))
        with storage.open(storage.join(self.out, ERRORS), "r") as f:
            reasons = Counter(json.loads(line)["reason"] for line in f if line.strip())
        return RunCounts(index["totals"]["samples"], reasons)


def _task_of(name: str) -> int | None:
    """The task a shard or temporary tar belongs to (`task-00007-000003.tar`, `.task-00007-000003.tar.tmp`)."""
    body = name[1:] if name.startswith(".") else name
    parts = body.split("-")
    if len(parts) == 3 and parts[0] == "task" and parts[1].isdigit() and is_task_leftover(name, int(parts[1])):
        return int(parts[1])
    return None
