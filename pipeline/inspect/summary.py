"""`vtl-pipeline inspect DIR`: what is in a shard folder, a few samples rendered for a human, and `--verify`.

The summary reads `index.json`, `errors.jsonl` and streams samples once (all of them with `--verify` or
`--scan 0`, else the first `--scan` samples) to count datasets, kinds, feature shapes, frames per sample and, in
training shards, QA stages/forms/templates (evaluation shards: benchmarks). Rendering of single samples lives in `pipeline.inspect.show`, the
verification in `pipeline.inspect.verify`.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice

from infra import storage
from infra.preflight import preflight
from pipeline.contract.checked import BadSample, ShardError, iter_checked, load_index, read_errors_checked
from pipeline.contract.provenance import RUN_CONFIG
from pipeline.contract.record import record_benchmark, record_form, record_stage
from pipeline.contract.shards import DURATION_MISMATCH, ERRORS, Sample, duration_mismatch_of
from pipeline.inspect.show import printable


@dataclass(frozen=True)
class InspectConfig:
    """Options of `vtl-pipeline inspect`, one field per CLI option."""

    shard_dir: str
    """Folder holding index.json and the shards: a local path or an `s3://`/`gs://` prefix (resolved here)."""
    show: int = 0
    """Render this many samples (meta, events timeline, conversation), in index order."""
    keys: tuple[str, ...] = ()
    """Render these samples (by key) as well."""
    verify: bool = False
    """Check every shard against the index; exit non-zero on any mismatch."""
    scan: int = 1000
    """Samples streamed for the per-sample statistics (0 = all). --verify always streams all."""
    as_json: bool = False
    """Print the summary (and verification problems) as JSON instead of tables."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shard_dir", storage.resolve(self.shard_dir))
        if storage.is_remote(self.shard_dir):
            preflight(self.shard_dir, what="shard folder")
        elif not storage.isdir(self.shard_dir):
            raise ValueError(f"{self.shard_dir} is not a folder")
        if self.show < 0 or self.scan < 0:
            raise ValueError("--show and --scan must be ≥ 0")


@dataclass
class Stats:
    """Per-sample counts gathered while streaming."""

    samples: int = 0
    datasets: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    shapes: Counter = field(default_factory=Counter)
    dtypes: Counter = field(default_factory=Counter)
    frames: Counter = field(default_factory=Counter)
    events: int = 0
    duration_total: float = 0.0
    stages: Counter = field(default_factory=Counter)
    forms: Counter = field(default_factory=Counter)
    benchmarks: Counter = field(default_factory=Counter)
    templates: Counter = field(default_factory=Counter)
    eval_queries: int = 0
    conversations: int = 0
    unreadable: Counter = field(default_factory=Counter)
    """Samples whose members do not decode, by reason (e.g. a `.npy` header that lies about its size)."""
    duration_mismatch: int = 0
    """Samples whose annotated duration disagrees with the decoded length of their media (meta.json flag)."""

    def add(self, s: Sample | BadSample) -> None:
        if isinstance(s, BadSample):
            self.unreadable[s.reason] += 1
            return
        meta = s.meta if isinstance(s.meta, dict) else {}
        self.samples += 1
        self.datasets[str(meta.get("dataset"))] += 1
        self.kinds[str(meta.get("kind"))] += 1
        self.shapes["×".join(map(str, s.features.shape))] += 1
        self.dtypes[str(s.features.dtype)] += 1
        self.frames[int(s.features.shape[0]) if s.features.ndim else 0] += 1
        self.events += len(meta.get("events") or [])
        self.duration_mismatch += duration_mismatch_of(meta) is not None
        if isinstance(meta.get("duration"), (int, float)):
            self.duration_total += meta["duration"]
        conv = s.conversation
        if isinstance(conv, dict):
            self.conversations += 1
            benchmark = record_benchmark(conv)
            if benchmark is not None:
                self.benchmarks[str(benchmark)] += 1
            else:
                self.stages[str(record_stage(conv))] += 1
                self.forms[str(record_form(conv))] += 1
            self.templates.update(str(t) for t in conv.get("templates") or [])
            self.eval_queries += len(conv.get("queries") or [])

    def to_json(self) -> dict:
        out = {k: (dict(v.most_common()) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}
        out["frames"] = {str(k): v for k, v in sorted(self.frames.items())}
        return out


def summarize(shard_dir: str, index: dict, stats: Stats, complete: bool) -> dict:
    """Everything the summary shows, as plain JSON-able values."""
    errors = read_errors_checked(storage.join(shard_dir, ERRORS))
    run_config = _run_config(storage.join(shard_dir, RUN_CONFIG))
    return {
        "folder": str(shard_dir),
        "producer": index.get("producer"),
        "created": index.get("created"),
        "encoder": index.get("encoder"),
        "num_frames": index.get("num_frames"),
        "dim": index.get("dim"),
        "manifest_hash": index.get("manifest_hash"),
        "totals": index.get("totals"),
        "shards": len(index.get("shards", [])),
        "errors_by_reason": {f"{step}/{reason}": n for (step, reason), n in
                             Counter((e.step, e.reason) for e in errors).most_common()},
        "qa": index.get("qa"),
        "run_config": run_config,
        "scanned": {"complete": complete, **stats.to_json()},
    }


def _run_config(path: str) -> dict | None:
    if not storage.exists(path):
        return None
    try:
        return json.loads(storage.read_bytes(path))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShardError(f"{path}: not valid JSON ({exc})") from None


def _counts_table(title: str, counts: dict, total: int | None = None):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("value", overflow="fold")
    table.add_column("count", justify="right")
    if total:
        table.add_column("share", justify="right")
    for name, n in counts.items():
        table.add_row(Text(printable(name)), str(n), *([f"{100 * n / total:.1f}%"] if total else []))
    return table


def _header(summary: dict):
    from rich.table import Table
    from rich.text import Text

    totals, prod, scanned = summary["totals"] or {}, summary["producer"] or {}, summary["scanned"]
    head = Table.grid(padding=(0, 2))
    head.add_column(no_wrap=True)
    head.add_column(overflow="fold")
    for label, value in (
            ("folder", summary["folder"]), ("producer", f"{prod.get('name')} {prod.get('version')}"),
            ("created", summary["created"]), ("encoder", summary["encoder"]),
            ("shards", f"{summary['shards']} ({totals.get('bytes', 0) / 1e6:.1f} MB)"),
            ("samples", totals.get("samples")), ("errors", totals.get("errors")),
            ("features", f"N={summary['num_frames']} × D={summary['dim']}"),
            ("manifest", summary["manifest_hash"]),
            ("statistics over", f"{scanned['samples']} samples" + ("" if scanned["complete"] else " (first ones; "
                                                                   "--scan 0 for all)"))):
        head.add_row(f"[bold]{label}[/]", Text(printable(value)))
    return head


def print_summary(console, summary: dict) -> None:
    from rich.columns import Columns

    scanned = summary["scanned"]
    console.print(_header(summary))
    n = scanned["samples"]
    console.print(Columns([_counts_table(title, scanned[key], n) for title, key in (
        ("datasets", "datasets"), ("kinds", "kinds"), ("feature shapes", "shapes"), ("feature dtypes", "dtypes"),
        ("frames per sample", "frames")) if scanned[key]], padding=(1, 4)))
    if n:
        console.print(f"events: {scanned['events']} ({scanned['events'] / n:.2f} per sample); "
                      f"mean duration {scanned['duration_total'] / n:.1f} s")
    if scanned["conversations"]:
        console.print(Columns([_counts_table(title, scanned[key], n if key != "templates" else None)
                               for title, key in (("QA stages", "stages"), ("QA forms", "forms"),
                                                  ("QA templates", "templates"),
                                                  ("benchmarks", "benchmarks")) if scanned[key]], padding=(1, 4)))
        if scanned["eval_queries"]:
            console.print(f"evaluation queries: {scanned['eval_queries']}")
    if isinstance(summary["qa"], dict):   # build-qa's statistics over every sample, whatever --scan says
        for name, value in summary["qa"].items():
            flat = isinstance(value, dict) and all(not isinstance(v, (dict, list)) for v in value.values())
            if flat and value:
                console.print(_counts_table(f"QA {name} (index)", value))
            elif value not in ({}, [], None):
                console.print(printable(f"QA {name} (index): {json.dumps(value, default=str)}"), markup=False)
    if scanned["duration_mismatch"]:
        console.print(f"[yellow]{DURATION_MISMATCH}[/]: {scanned['duration_mismatch']} sample(s) whose annotated "
                      "duration disagrees with the decoded length of their media (build-qa --on-duration-mismatch)")
    if scanned["unreadable"]:
        console.print(_counts_table("unreadable samples (see --verify)", scanned["unreadable"]))
    if summary["errors_by_reason"]:
        console.print(_counts_table(f"errors by step/reason ({ERRORS})", summary["errors_by_reason"]))


def print_problems(console, result) -> None:
    from rich.table import Table
    from rich.text import Text

    for w in result.warnings:
        console.print(Text.assemble(("warning", "yellow"), f": {printable(w)}"))
    if result.ok:
        console.print(f"[green]verify: OK[/] — {result.shards_checked} shards, {result.samples_checked} samples "
                      "match the index")
        return
    table = Table(title=f"verify: {len(result.problems)} problem(s)", title_justify="left", title_style="bold red")
    for col in ("shard", "key", "problem", "detail"):
        table.add_column(col, overflow="fold")
    for p in result.problems:
        table.add_row(*(Text(printable(x)) for x in (p.shard or "-", p.key or "-", p.code, p.detail)))
    console.print(table)


def run(cfg: InspectConfig, console=None) -> int:
    """Summary, rendered samples and (optionally) verification; returns the exit code (1 if verify found problems)."""
    from rich.console import Console

    from pipeline.inspect.show import show_samples
    from pipeline.inspect.verify import verify

    console = console or Console(highlight=False)
    index = load_index(cfg.shard_dir)
    stats, result = Stats(), None
    if cfg.verify:
        result = verify(cfg.shard_dir, index, on_sample=stats.add)
        complete = True
    else:
        samples = iter_checked(cfg.shard_dir, index)
        for s in (samples if cfg.scan == 0 else islice(samples, cfg.scan)):
            stats.add(s)
        complete = cfg.scan == 0 or stats.samples < cfg.scan
    summary = summarize(cfg.shard_dir, index, stats, complete)
    if cfg.as_json:
        if result is not None:
            summary["verify"] = {"ok": result.ok, "problems": [p.__dict__ for p in result.problems],
                                 "warnings": result.warnings}
        console.print_json(json.dumps(summary, default=str))
    else:
        print_summary(console, summary)
        if cfg.show or cfg.keys:
            show_samples(console, cfg.shard_dir, cfg.show, cfg.keys)
        if result is not None:
            print_problems(console, result)
    if stats.unreadable and result is None:
        console.print(f"[red]{sum(stats.unreadable.values())} sample(s) unreadable[/]: run with --verify for details")
        return 1
    return 0 if result is None or result.ok else 1
