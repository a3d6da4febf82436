"""What an extract run tells the user: the progress bar while tasks run, and the summary at the end
(`ExtractSummary`, printed by `print_summary`, which also decides the CLI's exit code)."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from pipeline.extract.executors import Stats


@dataclass
class ExtractSummary:
    """What a run did: rows, samples, error records by reason, tasks run and skipped, the time it took."""

    out_dir: str
    rows: int
    samples: int
    errors: Counter
    tasks_run: int
    tasks_skipped: int
    seconds: float
    failed: dict = field(default_factory=dict)
    step_seconds: Counter = field(default_factory=Counter)
    startup_seconds: float = 0.0  # of `seconds`: reading the manifest, starting/joining Ray, loading the encoders
    notes: list = field(default_factory=list)  # what the encoder plan says (e.g. CPU slots left idle)


class ProgressBar:
    """A rich progress bar over manifest rows: videos/s, frames/s, errors so far, ETA."""

    def __init__(self, enabled: bool, total: int, todo: int, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("extract"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                            TimeRemainingColumn(), console=console, disable=not enabled)
        self.task = self.bar.add_task("extract", total=total, completed=total - todo, info="")
        self.stats, self.t0 = Stats(), time.time()

    def __enter__(self):
        self.bar.start()
        return self.report

    def report(self, stats: Stats) -> None:
        self.stats.add(stats)
        dt = max(time.time() - self.t0, 1e-6)
        info = (f"{self.stats.items / dt:.2f} videos/s  {self.stats.frames / dt:.0f} frames/s  "
                f"errors {sum(self.stats.errors.values())}")
        self.bar.update(self.task, advance=stats.items, info=info)

    def __exit__(self, *exc) -> None:
        self.bar.stop()


def print_summary(s: ExtractSummary, console=None) -> int:
    """Counts by outcome and error reason; returns the exit code (1 when tasks failed and a rerun is needed, or
    when no row became a sample)."""
    from rich.console import Console

    console = console or Console()
    rate = s.rows / s.seconds if s.seconds else 0.0
    running = s.seconds - s.startup_seconds
    after = f", {s.rows / running:.2f} rows/s after {s.startup_seconds:.1f} s of start-up" if s.tasks_run and \
        s.startup_seconds and running > 0 else ""
    console.print(f"extract: {s.rows} rows, {s.tasks_run} tasks run, {s.tasks_skipped} already done, "
                  f"{s.seconds:.1f} s ({rate:.2f} rows/s{after})")
    for note in s.notes:
        console.print(f"  [yellow]{note}")
    if s.failed:
        for task_id, why in sorted(s.failed.items()):
            console.print(f"  task {task_id} failed: {why}")
        console.print(f"[red]{len(s.failed)} task(s) failed; rerun the same command to resume (index not written)")
        return 1
    console.print(f"  {s.samples} samples in shards, {sum(s.errors.values())} in errors.jsonl")
    if s.step_seconds:
        console.print("  seconds in steps, summed over tasks: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in s.step_seconds.items()))
    for reason, n in s.errors.most_common():
        console.print(f"    {reason}: {n}")
    console.print(f"  → {s.out_dir}")
    if s.rows and not s.samples:  # every row an error record: nothing was produced, so not a success
        console.print(f"[red]error: no sample extracted, all {s.rows} rows failed (see {s.out_dir}/errors.jsonl)")
        return 1
    return 0
