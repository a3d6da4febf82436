"""Tasks of an extract run on disk: the fixed manifest → task slices, the plan, completion markers, resume, the index.

Resumable by construction (STYLE.md 3): task t always owns the same manifest slice; it writes its shards
(`task-00007-000000.tar`, temporary name then rename) and its error file (`tasks/task-00007.errors.jsonl`), then its
marker `tasks/task-00007.done.json` listing its shards and error count. A task without a marker is unfinished: its
files are discarded and it runs again from the start. `errors.jsonl` and `index.json` are written after every task
has its marker, so every manifest row ends up exactly once in shards or errors.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.contract.shards import ERRORS, ShardInfo, write_index
from pipeline.contract.storage import write_json_atomic

TASKS_DIR = "tasks"
PLAN = "plan.json"


class PlanMismatch(RuntimeError):
    """A rerun whose task count, manifest or encoder differs from the run that started the folder."""


@dataclass(frozen=True)
class Task:
    task_id: int
    rows: list[dict]


def task_name(task_id: int) -> str:
    return f"task-{task_id:05d}"


def errors_file(out_dir: Path, task_id: int) -> Path:
    return Path(out_dir) / TASKS_DIR / f"{task_name(task_id)}.errors.jsonl"


def marker_file(out_dir: Path, task_id: int) -> Path:
    return Path(out_dir) / TASKS_DIR / f"{task_name(task_id)}.done.json"


def split_tasks(rows: list[dict], num_tasks: int) -> list[Task]:
    """Fixed contiguous slices: task t gets rows [t·n/T, (t+1)·n/T). Same manifest and T → same slices."""
    n = len(rows)
    return [Task(t, rows[t * n // num_tasks:(t + 1) * n // num_tasks]) for t in range(num_tasks)]


def check_plan(out_dir: Path, plan: dict, write: bool = True) -> bool:
    """Compare with the stored plan (True when resuming), or write the plan of a new run (when `write`)."""
    path = Path(out_dir) / TASKS_DIR / PLAN
    if not path.exists():
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, plan)
        return False
    old = json.loads(path.read_text())
    for field, what in (("num_tasks", "task count (--tasks)"), ("manifest_sha256", "manifest"),
                        ("encoder", "encoder")):
        if old.get(field) != plan.get(field):
            raise PlanMismatch(f"{out_dir} was started with a different {what}: {old.get(field)!r} there, "
                               f"{plan.get(field)!r} now. Rerun with the same settings to resume, or use a new --out.")
    return True


def discard(out_dir: Path, task_id: int) -> None:
    """Remove everything an unfinished task may have left (shards, temporary shards, its error file)."""
    out_dir = Path(out_dir)
    name = task_name(task_id)
    for p in list(out_dir.glob(f"{name}-*.tar")) + list(out_dir.glob(f".{name}-*.tar.tmp")):
        p.unlink(missing_ok=True)
    errors_file(out_dir, task_id).unlink(missing_ok=True)


def mark_done(out_dir: Path, task_id: int, rows: int, result: dict) -> Path:
    return write_json_atomic(marker_file(out_dir, task_id), {"task": task_id, "rows": rows, **result})


def read_marker(out_dir: Path, task_id: int) -> dict | None:
    """The task's marker when the task is complete and its shards are all present; None otherwise."""
    path = marker_file(out_dir, task_id)
    if not path.exists():
        return None
    marker = json.loads(path.read_text())
    if not all((Path(out_dir) / s["name"]).is_file() for s in marker["shards"]):
        path.unlink()
        return None
    return marker


def finalize(out_dir: Path, num_tasks: int, *, encoder: str, num_frames: int | None, dim: int, manifest_hash: str,
             extra: dict) -> Path:
    """Merge per-task error files into errors.jsonl, then write index.json (last)."""
    out_dir = Path(out_dir)
    markers = [read_marker(out_dir, t) for t in range(num_tasks)]
    if any(m is None for m in markers):
        raise RuntimeError("finalize called with unfinished tasks")
    tmp = out_dir / f".{ERRORS}.tmp"
    with open(tmp, "w") as out:
        for t in range(num_tasks):
            path = errors_file(out_dir, t)
            if path.exists():
                out.write(path.read_text())
    tmp.replace(out_dir / ERRORS)
    shards = [ShardInfo(s["name"], s["samples"], s["bytes"], s["sha256"]) for m in markers for s in m["shards"]]
    errors = sum(m["errors"] for m in markers)
    return write_index(out_dir, shards, encoder=encoder, num_frames=num_frames, dim=dim, manifest_hash=manifest_hash,
                       errors=errors, extra=extra)
