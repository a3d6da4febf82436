"""Training progress on rank 0: a rich bar on a terminal, plain lines where jobs run (a log file, `nohup`, a batch
system's stdout): `stage 1: step 120/4360 (2.8%) loss 2.3456 lr 9.98e-04 5210 tok/s elapsed 0:04:01 ETA 2:21:40`,
printed at the first step, then every `interval_s` seconds (VTL_PROGRESS_INTERVAL, default 30), and at the last.
"""
from __future__ import annotations

import os
import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class PlainProgress:
    """Periodic one-line progress for a stream that is not a terminal."""

    def __init__(self, total: int, start: int, label: str, interval_s: float, stream=None):
        self.total, self.start, self.label, self.interval = total, start, label, interval_s
        self.stream = stream or sys.stdout
        self.t0 = time.perf_counter()
        self.last = None

    def update(self, step: int, row: dict) -> None:
        now = time.perf_counter()
        if self.last is not None and now - self.last < self.interval and step < self.total:
            return
        self.last = now
        done = step - self.start  # this process's steps: the rate ignores time before a resume
        eta = (now - self.t0) / done * (self.total - step) if done > 0 else 0.0
        print(f"{self.label}: step {step}/{self.total} ({100 * step / max(1, self.total):.1f}%) "
              f"loss {row['loss']:.4f} lr {row['lr']:.2e} {row['tokens_per_s']:.0f} tok/s "
              f"elapsed {_clock(row.get('elapsed_s', now - self.t0))} ETA {_clock(eta)}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class Progress:
    """A rich progress bar on rank 0 when stdout is a terminal, PlainProgress lines when it is not; a no-op elsewhere
    or when disabled (`--no-progress`)."""

    def __init__(self, total: int, start: int, enabled: bool, label: str):
        self.bar, self.plain = None, None
        if not enabled:
            return
        if not sys.stdout.isatty():
            self.plain = PlainProgress(total, start, label, float(os.environ.get("VTL_PROGRESS_INTERVAL", 30)))
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        self.bar.start()
        self.task = self.bar.add_task(label, total=total, completed=start, loss="-", lr="-", tps="-")

    def update(self, step: int, row: dict) -> None:
        if self.plain is not None:
            self.plain.update(step, row)
        elif self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}",
                            tps=f"{row['tokens_per_s']:.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
