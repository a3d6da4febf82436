"""Writing a training-shard folder for build-qa and import-vtimellm: shards, errors.jsonl, run_config.json, and
index.json (last) with the QA statistics; plus the progress bar and the printed summary both commands share.

Shards are written with a fixed tar mtime so the same input and seed give byte-identical shards (their sha256 in
index.json then match). Every input that does not become a sample becomes an error record: nothing is dropped
silently.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from infra import storage
from infra.preflight import preflight
from manifests.schema import KEY_RE
from pipeline.contract.provenance import RUN_CONFIG, producer
from pipeline.contract.record import record_form
from pipeline.contract.shards import (
    ERRORS,
    INDEX,
    SHARD_SUFFIX,
    ErrorRecord,
    Sample,
    ShardWriter,
    write_index,
)

FIXED_MTIME = 0.0
"""Tar member mtime (1970-01-01): the shards' bytes depend only on their content."""
MAX_LISTED_KEYS = 100
RUN_LOCK = ".build-qa.lock"
"""build-qa's run lock in its output folder (infra.lock): one build-qa run per folder at a time."""
"""How many over-budget keys index.json lists (the count is always complete)."""


@dataclass
class QaStats:
    """What index.json's `qa` section holds; filled as samples are written."""

    stage: int | None
    """Training stage 1, 2 or 3; None for evaluation shards."""
    source: str
    benchmark: str | None = None
    """Evaluation shards: grounding or dvc."""
    seed: int | None = None
    samples: int = 0
    inputs: Counter = field(default_factory=Counter)
    turns_per_sample: Counter = field(default_factory=Counter)
    templates: Counter = field(default_factory=Counter)
    forms: Counter = field(default_factory=Counter)
    """Samples per record form (caption, multi_turn, dense_captioning, dialogue; the benchmark for eval)."""
    skipped: Counter = field(default_factory=Counter)
    events_kept: int = 0
    events_dropped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    token_budget: dict = field(default_factory=dict)

    def record(self, conversation: dict) -> None:
        self.samples += 1
        self.forms[record_form(conversation)] += 1
        self.templates.update(conversation.get("templates") or [])
        rounds = sum(1 for t in conversation["turns"] if t["from"] == "human") or len(conversation.get("queries", []))
        self.turns_per_sample[rounds] += 1

    def to_json(self) -> dict:
        def plain(c: Counter) -> dict:
            return {str(k): c[k] for k in sorted(c, key=lambda k: (str(k).isdigit() and int(k), str(k)))}
        templates = {k: self.templates[k] for k in sorted(self.templates, key=lambda t: (t[0], int(t[1:])))}
        return {"stage": self.stage, "benchmark": self.benchmark, "source": self.source, "seed": self.seed,
                "samples": self.samples,
                "inputs": plain(self.inputs), "turns_per_sample": plain(self.turns_per_sample),
                "templates": templates, "forms": plain(self.forms), "skipped": plain(self.skipped),
                "events": {"kept": self.events_kept, "dropped": plain(self.events_dropped)},
                "notes": plain(self.notes), "token_budget": self.token_budget}


def out_location(path) -> Path | str:
    """A local output stays a Path; an object-store URL stays a string (a Path would mangle s3:// into s3:/)."""
    return storage.resolve(path) if storage.is_remote(path) else Path(path)


def prepare_out_dir(out: Path | str, overwrite: bool) -> None:
    """Refuse to mix runs: the output folder (a path or an s3:// / gs:// prefix) must be empty or absent;
    `overwrite` removes only what these commands write (shards, index, errors, run config)."""
    preflight(out, write=True, what="output folder")
    names = [n for n in storage.listdir(out) if n != RUN_LOCK]  # this run's own lock (infra.lock)
    ours = [n for n in names if n in (INDEX, ERRORS, RUN_CONFIG) or n.endswith(SHARD_SUFFIX) or n.endswith(".tmp")]
    others = [n for n in names if n not in ours]
    if others or (ours and not overwrite):
        what = ", ".join(sorted(ours + others))[:200]
        hint = " (use --overwrite to replace a previous run)" if ours and not others else ""
        raise FileExistsError(f"output folder {out} is not empty: {what}{hint}")
    for name in ours:
        storage.remove(storage.join(out, name))


class QaOutput:
    """One output folder: `write` a sample, `error` an input that did not make it, `finish` writes the index."""

    def __init__(self, out: Path | str, prefix: str, step: str, stats: QaStats, samples_per_shard: int,
                 overwrite: bool = False):
        prepare_out_dir(out, overwrite)
        self.out, self.step, self.stats = out, step, stats
        self.writer = ShardWriter(out, prefix, samples_per_shard, mtime=FIXED_MTIME)
        # Error records go to errors.jsonl as they come (a spool file committed at finish): only their count is kept.
        self._errors = storage.AtomicFile(storage.join(out, ERRORS))
        self._errors_file = open(self._errors.local, "w", encoding="utf-8")
        self.error_count = 0
        self.keys: set[str] = set()
        self.shapes: Counter = Counter()

    def write(self, key: str, features, meta: dict, conversation: dict) -> None:
        """Write one sample; a key already written (duplicated input) becomes an error record instead."""
        if key in self.keys:
            self.error(key, "duplicate_key", "a sample with this key was already written")
            return
        if getattr(features, "ndim", 0) != 2:
            self.error(key, "bad_shape", f"features of shape {getattr(features, 'shape', None)}, expected (N, D)")
            return
        if not KEY_RE.match(key):
            self.error(key, "bad_key", "keys are [A-Za-z0-9_-]+ (a forged or renamed input)")
            return
        self.keys.add(key)
        self.writer.write(Sample(key=key, features=features, meta=meta, conversation=conversation))
        self.stats.record(conversation)
        self.shapes[tuple(features.shape)] += 1

    def error(self, key: str, reason: str, detail: str = "", source_id: str | None = None) -> None:
        record = ErrorRecord(key=key, step=self.step, reason=reason, detail=detail, source_id=source_id)
        self._errors_file.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
        self.error_count += 1
        self.stats.skipped[reason] += 1

    def abort(self) -> None:
        """Remove the shard being written and the error spool (after a failure), so no `.tmp` is left in the output
        folder."""
        if not self._errors_file.closed:
            self._errors_file.close()
            self._errors.discard()
        writer = self.writer
        if writer._tar is not None:
            for close in (writer._tar.close, writer._stream.close):
                try:
                    close()
                except OSError:  # a full disk fails the close as well
                    pass
            writer._pending.discard()
            writer._tar = None

    def finish(self, run_config: dict, encoder: str | None, manifest_hash: str | None,
               extra: dict | None = None) -> Path:
        """Close the shards, write errors.jsonl and run_config.json, then index.json (last) with the QA statistics
        and `extra` (build-qa: the `feature_spec` of the output)."""
        try:
            shards = self.writer.close()
            self._errors_file.close()
            self._errors.commit()
            storage.write_json_atomic(storage.join(self.out, RUN_CONFIG), {**run_config, "producer": producer()})
        except BaseException:
            self.abort()
            raise
        rows = {shape[0] for shape in self.shapes}
        dims = {shape[1] for shape in self.shapes}
        return write_index(self.out, shards, encoder=encoder, num_frames=rows.pop() if len(rows) == 1 else None,
                           dim=dims.pop() if len(dims) == 1 else None, manifest_hash=manifest_hash,
                           errors=self.error_count, extra={**(extra or {}), "qa": self.stats.to_json()})


def progress_iter(items: Iterable, total: int | None, description: str, enabled: bool) -> Iterator:
    """`items`, with a rich progress bar on stderr when enabled (long runs show where they are)."""
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def print_summary(title: str, index_path: Path) -> None:
    """The rich summary both commands print: counts, record forms, skipped inputs by reason, token budget."""
    import json

    from rich.console import Console
    from rich.table import Table

    index = json.loads(storage.read_bytes(index_path))
    qa = index["qa"]
    table = Table(title=title, show_header=False)
    table.add_row("output", str(storage.parent(index_path)))
    table.add_row("samples / shards", f"{index['totals']['samples']} / {index['totals']['shards']}")
    table.add_row("inputs", _fmt(qa["inputs"]))
    table.add_row("forms", _fmt(qa["forms"]))
    table.add_row("rounds per sample", _fmt(qa["turns_per_sample"]))
    if qa["templates"]:
        table.add_row("templates used", f"{len(qa['templates'])} distinct")
    table.add_row("skipped (errors.jsonl)", _fmt(qa["skipped"]) or "none")
    if qa["events"]["kept"] or qa["events"]["dropped"]:
        table.add_row("events kept / dropped", f"{qa['events']['kept']} / {_fmt(qa['events']['dropped']) or 0}")
    if qa["notes"]:
        table.add_row("notes", _fmt(qa["notes"]))
    budget = qa["token_budget"]
    table.add_row("token budget", f"{budget['over']} over {budget['max_tokens']} tokens (max seen "
                  f"{budget['max_seen']})" if budget.get("checked") else budget.get("reason", "not checked"))
    if budget.get("over_keys"):
        more = budget["over"] - len(budget["over_keys"][:10])
        table.add_row("over budget", ", ".join(budget["over_keys"][:10]) + (f" (+{more} more)" if more else ""))
    Console().print(table)


def _fmt(counts: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())
