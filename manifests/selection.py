"""VTimeLLM's stage-2 window selection over InternVid clips (reference §2.2), which its authors never released.

The paper keeps "videos ≤ 120 s with multiple non-overlapping events, each > 3 s, average event length > 8 % of the
video". InternVid-10M-FLT gives clips of long YouTube videos, so the "video" is a window of the original, as in the
released stage2.json (`meta.split`). For one YouTube video, deterministically:

1. drop clips of length ≤ `min_event_s` (`event_too_short`) and longer than `max_window_s`
   (`event_longer_than_window`);
2. drop overlaps, keeping the largest non-overlapping set: clips by (end, start, caption), a clip is kept when it
   starts at or after the end of the last kept one (`event_overlaps`);
3. scan the kept clips in time order, growing a window `[first start, last end]` while it stays ≤ `max_window_s` and
   its mean event length stays > `min_mean_ratio` × its length; a clip that would break either rule closes the window
   and opens the next one. A closed window with fewer than `min_events` events drops them (`window_too_few_events`);
4. keep at most `max_windows_per_video` windows (0 = all; default 1: stage2.json has one record per video), ranked by
   number of events, then seconds covered by events, then earliest start; the others' events are
   `window_over_video_limit`.
Pure functions on plain values; the reader (`internvid.py`) does the parsing and the rows.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

WINDOWS_OVER_LIMIT = "windows_over_video_limit"
"""Counted in `select`'s counter next to the per-event reasons: whole windows, not events."""


@dataclass(frozen=True)
class Clip:
    """One InternVid clip of a YouTube video, seconds inside the original file."""

    start: float
    end: float
    caption: str

    @property
    def length(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class SelectionRule:
    """The thresholds of the selection; defaults are the paper's."""

    max_window_s: float = 120.0      # a window (the stage-2 "video") lasts at most this long
    min_event_s: float = 3.0         # every event lasts strictly longer
    min_mean_ratio: float = 0.08     # mean event length > this fraction of the window
    min_events: int = 2              # "multiple" events
    max_windows_per_video: int = 1   # 0 = keep every qualifying window

    def __post_init__(self) -> None:
        for name in ("min_events", "max_windows_per_video"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        for name in ("max_window_s", "min_event_s", "min_mean_ratio"):
            if not isinstance(getattr(self, name), (int, float)) or isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        if not (self.max_window_s > 0 and self.min_event_s >= 0 and 0 <= self.min_mean_ratio < 1):
            raise ValueError(f"invalid selection thresholds: {self}")
        if self.min_events < 1 or self.max_windows_per_video < 0:
            raise ValueError(f"min_events must be ≥ 1 and max_windows_per_video ≥ 0: {self}")


def _fits(events: list[Clip], rule: SelectionRule) -> bool:
    span = events[-1].end - events[0].start
    mean = sum(e.length for e in events) / len(events)
    return span <= rule.max_window_s and mean > rule.min_mean_ratio * span


def non_overlapping(clips: list[Clip]) -> tuple[list[Clip], list[Clip]]:
    """Largest set of pairwise non-overlapping clips (earliest end first), in time order, and the dropped ones."""
    kept, dropped, last_end = [], [], float("-inf")
    for c in sorted(clips, key=lambda c: (c.end, c.start, c.caption)):
        if c.start >= last_end:
            kept.append(c)
            last_end = c.end
        else:
            dropped.append(c)
    return kept, dropped


def form_windows(events: list[Clip], rule: SelectionRule) -> tuple[list[list[Clip]], list[Clip]]:
    """Greedy windows over time-ordered, non-overlapping events (step 3); returns windows and the events left out."""
    windows, left, cur = [], [], []
    for ev in events:
        if cur and _fits(cur + [ev], rule):
            cur.append(ev)
            continue
        if len(cur) >= rule.min_events:
            windows.append(cur)
        else:
            left.extend(cur)
        cur = [ev]
    if len(cur) >= rule.min_events:
        windows.append(cur)
    else:
        left.extend(cur)
    return windows, left


def select(clips: list[Clip], rule: SelectionRule) -> tuple[list[list[Clip]], Counter, str | None]:
    """Windows kept for one video, the count of clips left out by reason (plus `WINDOWS_OVER_LIMIT`), and why the
    video has no window (or None)."""
    dropped: Counter = Counter()
    long_enough = [c for c in clips if c.length > rule.min_event_s]
    dropped["event_too_short"] = len(clips) - len(long_enough)
    fitting = [c for c in long_enough if c.length <= rule.max_window_s]
    dropped["event_longer_than_window"] = len(long_enough) - len(fitting)
    events, overlapping = non_overlapping(fitting)
    dropped["event_overlaps"] = len(overlapping)
    windows, left = form_windows(events, rule)
    dropped["window_too_few_events"] = len(left)
    if rule.max_windows_per_video and len(windows) > rule.max_windows_per_video:
        ranked = sorted(windows, key=lambda w: (-len(w), -sum(e.length for e in w), w[0].start))
        over = ranked[rule.max_windows_per_video:]
        dropped["window_over_video_limit"] = sum(len(w) for w in over)
        dropped[WINDOWS_OVER_LIMIT] = len(over)
        windows = sorted(ranked[:rule.max_windows_per_video], key=lambda w: w[0].start)
    dropped = Counter({k: n for k, n in dropped.items() if n})
    return windows, dropped, None if windows else _why_none(len(clips), len(long_enough), len(fitting),
                                                              len(events), rule)


def _why_none(n_in: int, n_long: int, n_fit: int, n_disjoint: int, rule: SelectionRule) -> str:
    """The first selection step after which the video could no longer hold a window."""
    if n_in < rule.min_events:
        return "too_few_clips"
    if n_long < rule.min_events:
        return "too_few_long_events"
    if n_fit < rule.min_events:
        return "too_few_events_within_max_window"
    if n_disjoint < rule.min_events:
        return "too_few_non_overlapping_events"
    return "no_window_fits"
