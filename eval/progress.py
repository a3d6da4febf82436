"""The vtl-eval progress bar: queries done / total, queries per second, elapsed and ETA.

The total is known before generation only in samples (index.json); queries per sample vary (grounding has several),
so the total starts as samples × 1 and is re-estimated from the queries per sample read so far after every chunk of
the stream; it is exact once the last chunk is read, and `--limit` caps it.
"""
from __future__ import annotations

from pathlib import Path


class QueryBar:
    def __init__(self, console, label: str, shards: Path, limit: int | None):
        import rich.progress as rp

        from pipeline.contract.shards import read_index

        self.samples = int(read_index(shards)["totals"]["samples"])
        self.limit, self.seen_queries, self.seen_samples = limit, 0, 0
        self.bar = rp.Progress(rp.TextColumn("[bold]{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
                               rp.TextColumn("{task.fields[rate]} queries/s"), rp.TimeElapsedColumn(),
                               rp.TextColumn("ETA"), rp.TimeRemainingColumn(), console=console, transient=True)
        self.task = self.bar.add_task(label, total=self._cap(self.samples), rate="-")

    def _cap(self, total: int) -> int:
        return min(total, self.limit) if self.limit is not None else total

    def __enter__(self) -> QueryBar:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def chunk(self, queries: int, samples: int) -> None:
        """A chunk of `queries` from `samples` samples was read: re-estimate the total."""
        self.seen_queries, self.seen_samples = self.seen_queries + queries, self.seen_samples + samples
        per_sample = self.seen_queries / max(1, self.seen_samples)
        rest = max(0, self.samples - self.seen_samples)
        self.bar.update(self.task, total=self._cap(self.seen_queries + round(per_sample * rest)))

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)
        speed = self.bar.tasks[0].speed
        self.bar.update(self.task, rate=f"{speed:.2f}" if speed else "-")

    def set_done(self, n: int) -> None:
        """`n` queries are answered in all (data-parallel: every rank's lines, counted by rank 0)."""
        self.bar.update(self.task, completed=n)
        speed = self.bar.tasks[0].speed
        self.bar.update(self.task, rate=f"{speed:.2f}" if speed else "-")
