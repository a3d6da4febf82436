"""The pictures of an evaluation run, written next to metrics.json by `vtl-eval grounding|dvc|score`.

- `{benchmark}.png`: the IoU histogram (grounding) or CIDEr/METEOR/BLEU-4 per tIoU threshold (dvc).
- `timeline.png`: grounding, the first N queries one row each, ground-truth span above the predicted one, as fractions
  of the video (an unparsable answer is written as such in its row); dense captioning, the first K videos one panel
  each, ground-truth and predicted events as bars in seconds with their captions as short labels.

What is drawn is decided by pure functions (`grounding_rows`, `dvc_timelines`, `assign_lanes`, `short_label`), tested
on their own; the `draw_*` functions only turn their output into matplotlib (Agg) figures.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from eval.metrics import Event

TIMELINE = "timeline.png"
DPI = 100
TRUTH_COLOR, PRED_COLOR, BAD_COLOR = "tab:green", "tab:blue", "tab:red"


def short_label(text: str, width: int) -> str:
    """One line of at most `width` characters: whitespace collapsed, cut at a word with "…" when too long."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    cut = text[:width - 1]
    if text[width - 1] != " " and cut.rfind(" ") >= width // 2:  # a word is cut: end at the one before
        cut = cut[:cut.rfind(" ")]
    return cut.rstrip(" ,.;:") + "…"


def _ordered(span: Sequence[float]) -> tuple[float, float, bool]:
    """(low, high, reversed) of a span whose ends may be in the wrong order (rule G4 keeps such spans)."""
    a, b = float(span[0]), float(span[1])
    return min(a, b), max(a, b), a > b


@dataclass(frozen=True)
class QueryRow:
    """One grounding query as drawn: spans as fractions of the video (low, high); `pred` None = unparsable."""

    label: str
    gt: tuple[float, float]
    pred: tuple[float, float] | None
    reversed: bool
    iou: float | None
    note: str
    """What the row says beside the bars: IoU and seconds, or that (and what) the answer could not be parsed."""


def grounding_rows(records: Sequence[Mapping], n: int, label_width: int = 48) -> list[QueryRow]:
    """The first `n` records of `eval.score.grounding_records` (which carry `duration`) as rows to draw."""
    rows = []
    for r in records[:n]:
        d = float(r["duration"])
        gs, ge, _ = _ordered(r["gt"])
        gt_note = f"truth {gs:.1f}–{ge:.1f} s"
        if r["span"] is None:
            answer = r.get("answer")
            pred, rev = None, False
            note = (f"unparsable: “{short_label(answer, 36)}”" if answer else "no prediction") + f"  ({gt_note})"
        else:
            ps, pe, rev = _ordered(r["span"])
            pred = (ps / d, pe / d)
            a, b = r["span"]
            note = f"IoU {r['iou']:.2f}  {gt_note}, predicted {a:.1f}–{b:.1f} s" + (" (reversed)" if rev else "")
        rows.append(QueryRow(short_label(f"{r['video']}: {r['sentence']}", label_width), (gs / d, ge / d), pred, rev,
                             r["iou"], note))
    return rows


@dataclass(frozen=True)
class EventBar:
    """One event as drawn: seconds (low, high), its lane within its group (0 = top), its caption shortened."""

    start: float
    end: float
    lane: int
    label: str
    reversed: bool = False


@dataclass(frozen=True)
class VideoTimeline:
    """One dense-captioning video as drawn: ground-truth and predicted events, each group in its own lanes."""

    video: str
    duration: float
    truth: tuple[EventBar, ...]
    predicted: tuple[EventBar, ...]
    unparsable: bool
    """The answer could not be parsed (rule D6): no predicted events, and the panel says so."""

    @property
    def lanes(self) -> tuple[int, int]:
        """(truth lanes, predicted lanes), at least one each."""
        return (max((e.lane for e in self.truth), default=0) + 1, max((e.lane for e in self.predicted), default=0) + 1)


def assign_lanes(spans: Sequence[tuple[float, float]]) -> list[int]:
    """A lane per span (in input order) such that spans sharing a lane do not overlap: by start, each into the first
    lane that is free again, so overlapping events (ActivityNet's often are) stay visible. Touching is not overlap."""
    ends: list[float] = []
    lanes = [0] * len(spans)
    for i in sorted(range(len(spans)), key=lambda i: (spans[i][0], spans[i][1])):
        s, e = spans[i]
        lane = next((k for k, end in enumerate(ends) if end <= s), len(ends))
        if lane == len(ends):
            ends.append(e)
        else:
            ends[lane] = e
        lanes[i] = lane
    return lanes


def _bars(events: Sequence[Event], label_width: int) -> tuple[EventBar, ...]:
    spans = [_ordered(span) for span, _ in events]
    order = sorted(range(len(events)), key=lambda i: spans[i][:2])
    lanes = assign_lanes([spans[i][:2] for i in order])
    return tuple(EventBar(spans[i][0], spans[i][1], lane, short_label(events[i][1], label_width), spans[i][2])
                 for i, lane in zip(order, lanes))


def dvc_timelines(events: Mapping[str, Sequence[Event]], gts: Mapping[str, Sequence[Event]],
                  durations: Mapping[str, float], k: int, unparsable: Sequence[str] = (), label_width: int = 40
                  ) -> list[VideoTimeline]:
    """The first `k` videos of `events` (predictions' order), events sorted by start, in lanes."""
    bad = set(unparsable)
    return [VideoTimeline(vid, float(durations[vid]), _bars(gts[vid], label_width), _bars(preds, label_width),
                          vid in bad)
            for vid, preds in list(events.items())[:k]]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return Path(path)


def draw_grounding_timeline(rows: Sequence[QueryRow], title: str, path: str | Path) -> Path:
    """One row per query, top to bottom: the ground-truth span (green) above the predicted one (blue; hatched when
    reversed, "unparsable" in red when there is none), x = fraction of the video; the note at the right."""
    plt = _pyplot()
    high = max([1.0] + [r.gt[1] for r in rows] + [r.pred[1] for r in rows if r.pred])
    fig = plt.figure(figsize=(13, 0.32 * len(rows) + 1.3))
    ax = fig.add_axes((0.27, 0.9 / (0.32 * len(rows) + 1.3), 0.45, 1 - 1.3 / (0.32 * len(rows) + 1.3)))
    for y, r in enumerate(rows):
        ax.barh(y - 0.19, r.gt[1] - r.gt[0], left=r.gt[0], height=0.34, color=TRUTH_COLOR)
        if r.pred is None:
            ax.text(0.01, y + 0.19, "unparsable", color=BAD_COLOR, fontsize=7, va="center", style="italic")
        else:
            ax.barh(y + 0.19, max(r.pred[1] - r.pred[0], high / 400), left=r.pred[0], height=0.34, color=PRED_COLOR,
                    hatch="////" if r.reversed else None, alpha=0.6 if r.reversed else 1.0)
        ax.text(1.01, y, r.note, transform=ax.get_yaxis_transform(), fontsize=7, va="center",
                color=BAD_COLOR if r.pred is None else "black")
    ax.set_yticks(range(len(rows)), [r.label for r in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, high)
    if high > 1.0:
        ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("position in the video (fraction of its length)")
    ax.grid(axis="x", alpha=0.3)
    ax.bar(0, 0, color=TRUTH_COLOR, label="ground truth")
    ax.bar(0, 0, color=PRED_COLOR, label="predicted")
    ax.legend(loc="lower left", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=7, frameon=False)
    ax.set_title(title, fontsize=9, loc="left")
    return _save(fig, path)


def draw_dvc_timeline(videos: Sequence[VideoTimeline], title: str, path: str | Path) -> Path:
    """One panel per video: ground-truth events (green lanes) above predicted ones (blue lanes), x in seconds from 0
    to the video's duration (or the last event's end), each bar labelled with its caption (clipped to the bar)."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    heights = [sum(v.lanes) + 1.2 for v in videos]
    fig, axes = plt.subplots(len(videos), 1, figsize=(12, 0.28 * sum(heights) + 0.9 * len(videos) + 0.6),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, v in zip(axes[:, 0], videos):
        n_gt, n_pred = v.lanes
        groups = ((v.truth, 0.0, TRUTH_COLOR), (v.predicted, n_gt + 0.5, PRED_COLOR))
        high = max([v.duration] + [e.end for e in v.truth + v.predicted])
        for bars, top, color in groups:
            for e in bars:
                rect = Rectangle((e.start, top + e.lane + 0.1), max(e.end - e.start, high / 400), 0.8, color=color,
                                 alpha=0.35, hatch="////" if e.reversed else None)
                ax.add_patch(rect)
                txt = ax.text(e.start + high / 200, top + e.lane + 0.5, e.label, fontsize=7, va="center")
                txt.set_clip_path(rect)  # a caption never runs over the next event
                txt.set_clip_on(True)
        if not v.predicted:
            ax.text(high / 200, n_gt + 1.0, "unparsable answer: no events" if v.unparsable else "no events predicted",
                    color=BAD_COLOR, fontsize=8, va="center", style="italic")
        ax.set_xlim(0, high)
        ax.set_ylim(n_gt + n_pred + 0.5, 0)
        ax.set_yticks([n_gt / 2, n_gt + 0.5 + n_pred / 2], ["truth", "predicted"], fontsize=8)
        ax.axhline(n_gt + 0.25, color="grey", lw=0.6)
        if v.duration < high:
            ax.axvline(v.duration, color="grey", lw=0.8, ls=":")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(f"{v.video}  ({v.duration:.1f} s; {len(v.truth)} events, {len(v.predicted)} predicted)",
                     fontsize=8, loc="left")
    axes[-1, 0].set_xlabel("seconds")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot(benchmark: str, data: dict, metrics: dict, path: str | Path) -> Path:
    """IoU histogram (grounding) or per-tIoU scores (dvc) as a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    if benchmark == "grounding":
        ious = [x if x is not None else 0.0 for x in data["ious"]]
        ax.hist(ious, bins=20, range=(0, 1), color="tab:blue")
        ax.set_xlabel("IoU (unparsable answers count as 0)")
        ax.set_ylabel("queries")
        ax.set_title(f"grounding: n={metrics['n']}, mIoU={metrics['mIoU']:.1f}, R1@0.5={metrics['R1@0.5']:.1f}")
    else:
        tious = data["tious"]
        for name in ("CIDEr", "METEOR", "BLEU4"):
            ax.plot(tious, data[name], marker="o", label=name)
        ax.set_xlabel("tIoU threshold")
        ax.set_ylabel("score (%)")
        ax.legend()
        ax.set_title(f"dense captioning: n={metrics['n']}, SODA_c={metrics['SODA_c']:.2f}")
    fig.tight_layout()
    return _save(fig, path)


def write_figures(out: Path, benchmark: str, data: dict, metrics: dict, queries: int, videos: int) -> list[Path]:
    """`{benchmark}.png` and, unless `queries` (grounding) / `videos` (dvc) is 0, `timeline.png`, into `out`."""
    paths = [plot(benchmark, data, metrics, out / f"{benchmark}.png")]
    if benchmark == "grounding" and queries > 0 and data["records"]:
        rows = grounding_rows(data["records"], queries)
        title = (f"grounding: first {len(rows)} of {metrics['n']} queries · mIoU {metrics['mIoU']:.1f} · "
                 f"R1@0.5 {metrics['R1@0.5']:.1f} · unparsed {metrics['unparsed']:.1f}%")
        paths.append(draw_grounding_timeline(rows, title, out / TIMELINE))
    elif benchmark == "dvc" and videos > 0 and data["events"]:
        timelines = dvc_timelines(data["events"], data["gts"], data["durations"], videos, data["unparsable"])
        title = (f"dense captioning: first {len(timelines)} of {metrics['n']} videos · SODA_c {metrics['SODA_c']:.2f}"
                 f" · unparsed {metrics['unparsed']:.1f}%")
        paths.append(draw_dvc_timeline(timelines, title, out / TIMELINE))
    return paths
