"""The run folder of an extract, owned by one class: the fixed task slices, the plan, resume, markers, the index.

Resumable by construction (STYLE.md 3): task t always owns the same manifest slice; it writes its shards
(`task-00007-000000.tar`, each committed whole) and its error file (`tasks/task-00007.errors.jsonl`), then its
marker `tasks/task-00007.done.json` listing its shards and error count. A task without a marker is unfinished: its
files are discarded and it runs again from the start. `errors.jsonl` and `index.json` are written after every task
has its marker, so every manifest row ends up exactly once in shards or errors.

The folder is a storage location (infra/storage.py): a local path or an `s3://`/`gs://` prefix. Every
file here is committed atomically there (local rename, or one PUT of the finished object), so a marker, a shard or
the index is either complete or absent, on disk and in an object store alike.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from infra import storage
from pipeline.contract.shards import ERRORS, ShardInfo, write_index

TASKS_DIR = "tasks"
PLAN = "plan.json"
PLAN_FIELDS = (("num_tasks", "task count (--tasks)"), ("manifest_sha256", "manifest"), ("encoder", "encoder"))


class PlanMismatch(RuntimeError):
    """A rerun whose task count, manifest or encoder differs from the run that started the folder."""


@dataclass(frozen=True)
class Task:
    task_id: int
    rows: list[dict]


def task_name(task_id: int) -> str:
    return f"task-{task_id:05d}"


def split_tasks(rows: list[dict], num_tasks: int) -> list[Task]:
    """Fixed contiguous slices: task t gets rows [t·n/T, (t+1)·n/T). Same manifest and T → same slices."""
    n = len(rows)
    return [Task(t, rows[t * n // num_tasks:(t + 1) * n // num_tasks]) for t in range(num_tasks)]


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
    def check(self) -> bool:
        """True when the folder holds a run with this plan (resume), False when new; PlanMismatch when it differs."""
        if not storage.exists(self.plan_file):
            return False
        old = storage.read_json(self.plan_file)
        for name, what in PLAN_FIELDS:
            if old.get(name) != self.plan.get(name):
                raise PlanMismatch(f"{self.out} was started with a different {what}: {old.get(name)!r} there, "
                                   f"{self.plan.get(name)!r} now. Rerun with the same settings to resume, or use a "
                                   f"new --out.")
        return True

    def start(self) -> None:
        """Record the plan of a new run (after the models loaded: a run that cannot start leaves no plan)."""
        if not self.check():
            storage.write_json_atomic(self.plan_file, self.plan)

    # --- tasks ------------------------------------------------------------------------------------------------
    def todo(self, tasks: list[Task]) -> list[Task]:
        """The tasks without a valid marker (one listing of the folder, not one request per shard)."""
        names = set(storage.listdir(self.out))
        return [t for t in tasks if self._marker(t.task_id, names) is None]

    def _marker(self, task_id: int, names: set[str]) -> dict | None:
        """The task's marker when the task is complete and all its shards are present; None otherwise."""
        path = self.marker_file(task_id)
        try:
            marker = json.loads(storage.read_bytes(path))
        except FileNotFoundError:
            return None
        if not all(s["name"] in names for s in marker["shards"]):
            storage.remove(path)
            return None
        return marker

    def discard(self, task_id: int) -> None:
        """Remove everything an unfinished task may have left (shards, temporary shards, its error file)."""
        name = task_name(task_id)
        for entry in storage.listdir(self.out):
            if (entry.startswith(f"{name}-") and entry.endswith(".tar")) or \
                    (entry.startswith(f".{name}-") and entry.endswith(".tar.tmp")):
                storage.remove(storage.join(self.out, entry))
        storage.remove(self.errors_file(task_id))

    def mark_done(self, task: Task, results: list[dict]) -> str:
        """Write the task's marker (after its shards and error file): the steps' results merged, and the row count."""
        merged = {k: v for r in results for k, v in r.items()}
        return storage.write_json_atomic(self.marker_file(task.task_id),
                                         {"task": task.task_id, "rows": len(task.rows), **merged})

    # --- the end of a run ---------------------------------------------------------------------------------------
    def finalize(self, *, num_frames: int | None, dim: int, extra: dict) -> RunCounts:
        """Merge the per-task error files into errors.jsonl, then write index.json (last); returns the counts."""
        names = set(storage.listdir(self.out))
        markers = [self._marker(t, names) for t in range(self.plan["num_tasks"])]
        if any(m is None for m in markers):
            raise RuntimeError("finalize called with unfinished tasks")
        lines = []
        for t in range(self.plan["num_tasks"]):
            try:
                lines += [ln for ln in storage.read_text(self.errors_file(t)).splitlines() if ln.strip()]
            except FileNotFoundError:
                pass
        storage.write_bytes_atomic(storage.join(self.out, ERRORS), "".join(ln + "\n" for ln in lines).encode())
        shards = [ShardInfo(s["name"], s["samples"], s["bytes"], s["sha256"]) for m in markers for s in m["shards"]]
        write_index(self.out, shards, encoder=self.plan["encoder"], num_frames=num_frames, dim=dim,
                    manifest_hash=self.plan["manifest_sha256"], errors=sum(m["errors"] for m in markers),
                    extra=extra)
        return RunCounts(sum(s.samples for s in shards), Counter(json.loads(ln)["reason"] for ln in lines))
