"""The training progress bar (rich): step / total, loss, learning rate, tokens/s and the time left."""
from __future__ import annotations


class Progress:
    """A rich progress bar on rank 0; a no-op elsewhere or when disabled (`--no-progress`)."""

    def __init__(self, total: int, start: int, enabled: bool, label: str):
        self.bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        self.bar.start()
        self.task = self.bar.add_task(label, total=total, completed=start, loss="-", lr="-", tps="-")

    def update(self, step: int, row: dict) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}",
                            tps=f"{row['tokens_per_s']:.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
