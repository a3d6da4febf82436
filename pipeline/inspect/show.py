"""`vtl-pipeline inspect --show N / --key K`: one sample rendered for a terminal.

Meta as a table, events as a text timeline on the 00–99 timestamp scale (each column covers two positions, so the
bar fits 80 columns), the conversation with its rendered timestamp tokens highlighted, and for evaluation samples
the queries with their spans in seconds and as timestamp positions.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.contract.checked import BadSample, iter_checked
from pipeline.contract.shards import Sample
from pipeline.contract.timing import render_time

BAR = 50
"""Timeline width in columns; one column = two timestamp positions."""
TIMESTAMP = r"(?<!\d)\d{2}(?!\d)"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Control characters (ESC starts terminal escape sequences; C1 controls; bidirectional overrides); \t and \n stay."""


def printable(value) -> str:
    """`str(value)` with control characters shown as `\\xNN` escapes: a caption cannot drive the terminal."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), str(value))


def _short_list(values, head: int = 3, tail: int = 2) -> str:
    if not isinstance(values, list):
        return str(values)
    if len(values) <= head + tail:
        return str(values)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    return f"[{', '.join(map(fmt, values[:head]))}, …, {', '.join(map(fmt, values[-tail:]))}] ({len(values)})"


def meta_table(sample: Sample):
    from rich.table import Table
    from rich.text import Text

    meta, feats = sample.meta, sample.features
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for name in ("dataset", "source_id", "media", "kind", "window", "duration", "fps", "num_frames", "encoder",
                 "caption", "decoder"):
        if meta.get(name) is not None:
            table.add_row(f"[bold]{name}[/]", Text(printable(meta[name])))  # Text: no rich markup from data
    table.add_row("[bold]frame_indices[/]", Text(printable(_short_list(meta.get("frame_indices")))))
    table.add_row("[bold]frame_times[/]", Text(printable(_short_list(meta.get("frame_times")))))
    f32 = feats.astype(np.float32)
    stats = (f"{feats.shape} {feats.dtype}; mean {f32.mean():.4f}, std {f32.std():.4f}, "
             f"row norms {np.linalg.norm(f32, axis=-1).mean():.3f}" if f32.size and np.isfinite(f32).all()
             else f"{feats.shape} {feats.dtype}")
    table.add_row("[bold]features[/]", stats)
    return table


def timeline(events: list[dict], duration: float) -> list[str]:
    """Text lines: a ruler on the 00–99 scale, then per event its span and caption over a bar (`█` where it is)."""
    ruler = [" "] * (BAR + 1)
    for c in range(0, BAR, 10):
        ruler[c:c + 2] = f"{2 * c:02d}"
    ruler[BAR - 1:BAR + 1] = "99"
    lines = ["  " + "".join(ruler), "  " + "".join("|" if c % 10 == 0 else "·" for c in range(BAR)) + "|"]
    for ev in events:
        start, end = float(ev["start"]), float(ev["end"])
        a, b = int(render_time(start, duration)), int(render_time(end, duration))
        lines.append(f"  {a:02d}-{b:02d} ({start:.1f}-{end:.1f} s) {printable(ev.get('caption', ''))}")
        lines.append("  " + "".join("█" if a // 2 <= c <= b // 2 else " " for c in range(BAR)) + "|")
    return lines


def conversation_lines(conv: dict, duration: float | None):
    """rich Text lines for the turns (timestamps highlighted) and, for evaluation samples, the queries."""
    from rich.text import Text

    head = ", ".join(f"{k} {conv.get(k)}" for k in ("stage", "form", "benchmark", "task", "templates", "seed", "source")
                     if k in conv)
    lines = [Text(printable(head), style="dim")]
    for turn in conv.get("turns", []):
        role = "USER" if turn.get("from") == "human" else "ASSISTANT"
        text = Text(f"{role}: ", style="bold green" if role == "USER" else "bold blue")
        body = Text(printable(turn.get("value")))
        body.highlight_regex(TIMESTAMP, "bold magenta")
        lines.append(text + body)
    for q in conv.get("queries", []):
        span = q.get("span") or [None, None]
        pos = (f" → {render_time(span[0], duration)}-{render_time(span[1], duration)}"
               if duration and None not in span else "")
        lines.append(Text(printable(f"query {q.get('id')}: {q.get('query')}\n  truth: {q.get('sentence')}  "
                                    f"span {span} s{pos}")))
    for ev in conv.get("events", []):
        lines.append(Text(printable(f"  event {ev.get('span')} s: {ev.get('sentence')}")))
    return lines


def render_sample(console, sample: Sample) -> None:
    """One sample; a sample whose meta or conversation is not of the contract's shape is rendered as far as it goes,
    then named in one line."""
    from rich.rule import Rule
    from rich.text import Text

    console.print(Rule(Text(printable(sample.key), style="bold")))
    if not isinstance(sample.meta, dict):
        sample = Sample(sample.key, sample.features, {}, sample.conversation)
    try:
        _render_body(console, sample)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        console.print(Text(printable(f"cannot render {sample.key}: {type(exc).__name__}: {exc}"), style="red"))


def _render_body(console, sample: Sample) -> None:
    console.print(meta_table(sample))
    meta = sample.meta
    duration = meta.get("duration")
    events = meta.get("events") or []
    if events and isinstance(duration, (int, float)) and duration > 0:
        console.print(f"[bold]events[/] ({len(events)}, positions 00-99 of {duration:.1f} s):")
        for line in timeline(events, duration):
            console.print(line, highlight=False, markup=False)
    elif events:
        console.print(printable(f"events: {events}"), markup=False)
    if isinstance(sample.conversation, dict):
        console.print("[bold]conversation[/]:")
        for line in conversation_lines(sample.conversation, duration if isinstance(duration, (int, float)) else None):
            console.print(line)


def show_samples(console, shard_dir: Path, count: int, keys: tuple[str, ...] = ()) -> None:
    """Render the first `count` samples and any sample whose key is in `keys` (streams until all are found)."""
    wanted = set(keys)
    shown = 0
    for sample in iter_checked(shard_dir):
        if isinstance(sample, BadSample):
            console.print(printable(f"{sample.key}: unreadable ({sample.reason}: {sample.detail})"), markup=False)
            continue
        if shown < count or sample.key in wanted:
            render_sample(console, sample)
            wanted.discard(sample.key)
            shown += 1
        if shown >= count and not wanted:
            break
    if wanted:
        console.print(printable(f"not found: {', '.join(sorted(wanted))}"), markup=False, style="red")
