"""The timeline under vtl-chat's web page (eval.web): the spans an answer names and their SVG drawing.

Which spans an answer names (`answer_spans`), read with `eval.parse`:
  - a dense-captioning answer (rules D1–D4 parse events, the answer is JSON events or starts with "From ss to ee",
    and at least one caption has a letter in it) is drawn as its events, in seconds by rule D5 ((s/100·D,
    (e+1)/100·D)); so "From 12 to 45, he opens the door." is one event, but "From 12 to 45." and "He opens it
    from 12 to 45 and again from 60 to 70." are grounding answers;
  - otherwise every "aa to bb" / "aa and bb" of the answer (the grounding regex, all matches, not only G1's first)
    is drawn by rule G2 (a/100·D, b/100·D). A reversed span is drawn between its two ends, dashed.
The drawing (`timeline_html`) is a pure function of the spans and the duration.
"""
from __future__ import annotations

import html
import re
from typing import NamedTuple

from eval.parse import GROUNDING_RE, PLAIN_EVENT_RE, dense_caption_events, grounding_regex
from pipeline.contract.timing import DEFAULT_TIME_FORMAT, TimeFormat, grounding_span

COLOURS = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2")
WIDTH, ROW, AXIS = 1000, 36, 30  # SVG user units: width, height of one span's row, height of the time axis
# Seeks the page's video when a span of the timeline is clicked (runs once per timeline component; the listener
# survives re-renders because it sits on the component's root element).
SEEK_JS = """
element.addEventListener('click', (event) => {
  const span = event.target.closest('[data-start]');
  const video = document.querySelector('#vtl-video video');
  if (span && video) { video.currentTime = parseFloat(span.dataset.start); }
});
"""


class Span(NamedTuple):
    """One span of an answer, in seconds of the video, with its text (an event's caption or the "aa to bb")."""

    start: float
    end: float
    label: str


def answer_spans(answer: str, duration: float, time: TimeFormat = DEFAULT_TIME_FORMAT) -> list[Span]:
    """The spans an answer names, in seconds (module docstring: dense events, else every "aa to bb"), its times
    read in the checkpoint's format (`time`: "12.5s" for seconds; VTimeLLM's two-digit positions by default)."""
    events = dense_caption_events(answer, duration, fmt=time)
    plain = PLAIN_EVENT_RE if time == DEFAULT_TIME_FORMAT else re.compile(
        rf"from {time.pattern} to {time.pattern}", re.IGNORECASE)
    listed = '"timestamps"' in answer or plain.match(answer.lstrip())  # JSON, or "From ss to ee, …" first
    if events and listed and any(any(ch.isalpha() for ch in text) for _, text in events):
        return [Span(s, e, text) for (s, e), text in events]
    out = []
    for m in (GROUNDING_RE if time == DEFAULT_TIME_FORMAT else grounding_regex(time)).finditer(answer):
        if time == DEFAULT_TIME_FORMAT:  # VTimeLLM's rule G2, its float operations as they are
            s, e = grounding_span(int(m.group(1)), int(m.group(3)), duration)
        else:
            s, e = time.grounding_span(m.group(1), m.group(3), duration)
        out.append(Span(s, e, m.group(0)))
    return out


def _x(t: float, duration: float) -> float:
    return round(WIDTH * min(max(t / duration, 0.0), 1.0), 1)


def timeline_html(spans: list[Span], duration: float) -> str:
    """An SVG timeline of `duration` seconds, one row per span (bar, label, seconds); each row carries `data-start`
    and `data-end` in seconds so a click can seek. No spans: a one-line note instead."""
    if duration <= 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    if not spans:
        return '<div class="vtl-timeline vtl-empty">No time span in this answer.</div>'
    height = AXIS + ROW * len(spans)
    parts = [f'<div class="vtl-timeline" data-duration="{duration:g}">',
             f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" '
             f'font-family="sans-serif" font-size="17">',
             f'<rect x="0" y="{AXIS - 6}" width="{WIDTH}" height="2" fill="#9ca3af"/>']
    for k in range(5):  # ticks at 0, ¼, ½, ¾ and the whole duration
        t = duration * k / 4
        x = _x(t, duration)
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        parts.append(f'<line x1="{x}" y1="{AXIS - 12}" x2="{x}" y2="{height}" stroke="#e5e7eb"/>'
                     f'<text x="{x}" y="{AXIS - 14}" text-anchor="{anchor}" fill="#6b7280">{t:.1f} s</text>')
    for i, span in enumerate(spans):
        parts.append(_row(i, span, duration))
    parts.append("</svg></div>")
    return "".join(parts)


def _row(i: int, span: Span, duration: float) -> str:
    lo, hi = sorted((span.start, span.end))
    x0, x1 = _x(lo, duration), _x(hi, duration)
    y = AXIS + ROW * i
    colour = COLOURS[i % len(COLOURS)]
    reversed_ = span.end < span.start
    seconds = f"{span.start:.1f}–{span.end:.1f} s"
    text = html.escape(f"{span.label} ({seconds})" if span.label else seconds)
    anchor, tx = ("start", x0) if x0 < WIDTH * 0.6 else ("end", x1)
    bar_style = f'fill="none" stroke="{colour}" stroke-dasharray="4 3"' if reversed_ else f'fill="{colour}"'
    return (f'<g class="vtl-span{" vtl-reversed" if reversed_ else ""}" data-start="{span.start:.3f}" '
            f'data-end="{span.end:.3f}" style="cursor:pointer">'
            f'<title>{text}: click to seek</title>'
            f'<rect x="{x0}" y="{y + 20}" width="{max(x1 - x0, 2):.1f}" height="12" rx="3" {bar_style}/>'
            f'<text x="{tx}" y="{y + 16}" text-anchor="{anchor}" fill="#111827">{text}</text></g>')
