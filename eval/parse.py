"""Turning a model's raw answer into spans, with VTimeLLM's evaluation rules (reference §6.2).

Grounding (`parse_grounding`):
  G1. The answer's **first** match of two 2-digit numbers joined by " to " or " and " (regex `(\\d{2}) (to|and)
      (\\d{2})`, searched anywhere, no word boundaries) gives positions a, b on the 0–99 scale.
  G2. Seconds: (a/100·D, b/100·D) (`pipeline.contract.timing.grounding_span`; no +1 on the end).
  G3. No match ⇒ unparsable: the query is a miss (IoU 0) and counts in `unparsed`.
  G4. A reversed span ("60 to 20") is kept as written; its IoU is 0 because the intersection is clamped at 0 —
      the reference scorer behaves the same way.
  G5. Numbers outside 00–99 are not special-cased, exactly like the reference regex: "from 100 to 120" matches
      "00 to 12"; "5 to 20" (one digit) does not match at all.

Dense captioning (`parse_dense_captions`):
  D1. JSON: the first `[...]` on one line (greedy, from the first "[" to the last "]" of that line) is parsed as a
      JSON list of `{"event": TEXT, "timestamps": "from xx to xx"}`; the start is characters 5–6 of `timestamps`, the
      end its last two characters (as ints).
  D2. Items are read in order; the first malformed item (missing key, non-number, not an object) stops the list and
      the items before it are kept (the reference appends items until its exception).
  D3. Plain text (the lenient reading only; VTimeLLM scores such answers as empty): when the answer is not a JSON
      attempt (no `"timestamps"` key anywhere), every
      "From ss to ee, caption." (case-insensitive, two-digit numbers, `,` or `:` after the span optional) is an
      event whose caption runs to the next "from ss to ee" or the end.
      This is the stage-2 training answer format. Broken JSON is never re-read as plain text: its pieces would
      become nonsense captions.
  D4. Consecutive events whose sentences are near-identical (difflib ratio > 0.98) and whose spans touch (next start
      − current end within ±1) are merged into one event spanning both.
  D5. Seconds: (s·D/100, (e+1)·D/100) (`pipeline.contract.timing.dense_caption_span`: the +1 is VTimeLLM's rule).
  D6. Nothing parsed ⇒ unparsable: the video's prediction is empty (it scores 0) and counts in `unparsed`.

Time formats: the rules above are the default format's (`relative` on 100 positions, VTimeLLM's). Every function takes
the shards' `TimeFormat` (pipeline.contract.timing); another format swaps the two-digit number for its own pattern
(`12.5s`, a frame index), reads JSON `timestamps` with that pattern instead of fixed character positions, and converts
with the format's own rule (`TimeFormat.grounding_span` / `dense_span`).
"""
from __future__ import annotations

import difflib
import functools
import json
import re

from pipeline.contract.timing import DEFAULT_TIME_FORMAT, TimeFormat, dense_caption_span, grounding_span

GROUNDING_RE = re.compile(r"(\d{2}) (to|and) (\d{2})")
JSON_LIST_RE = re.compile(r"\[.*\]")
PLAIN_EVENT_RE = re.compile(r"from (\d{2}) to (\d{2})\b\s*[,:]?\s*", re.IGNORECASE)
MERGE_RATIO = 0.98

Positions = tuple[int, int]


@functools.lru_cache(maxsize=16)
def _regexes(fmt: TimeFormat) -> tuple[re.Pattern, re.Pattern, re.Pattern]:
    """(grounding, plain dense event, JSON `timestamps`) regexes of a format; the default's are the ones above."""
    if fmt == DEFAULT_TIME_FORMAT:
        return GROUNDING_RE, PLAIN_EVENT_RE, re.compile(r"from (\d{2}) to (\d{2})")
    p = fmt.pattern
    return (re.compile(rf"{p} (to|and) {p}"), re.compile(rf"from {p} to {p}\b\s*[,:]?\s*", re.IGNORECASE),
            re.compile(rf"from {p} to {p}"))


def _number(text: str, fmt: TimeFormat) -> int | float:
    return float(text) if fmt.kind == "seconds" else int(text)


def grounding_regex(fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> re.Pattern:
    """Rule G1's regex for a time format (groups 1 and 3 are the two numbers)."""
    return _regexes(fmt)[0]


def parse_grounding(answer: str, fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> Positions | None:
    """Rule G1: the first "aa to bb" / "aa and bb" pair as numbers (ints; seconds: floats), or None."""
    m = _regexes(fmt)[0].search(answer)
    return (_number(m.group(1), fmt), _number(m.group(3), fmt)) if m else None


def grounding_answer_span(answer: str, duration: float,
                          fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> tuple[float, float] | None:
    """Rules G1–G3: the answer's span in seconds, or None when unparsable."""
    pos = parse_grounding(answer, fmt)
    if pos is None:
        return None
    return grounding_span(pos[0], pos[1], duration) if fmt == DEFAULT_TIME_FORMAT else \
        fmt.grounding_span(pos[0], pos[1], duration)


def _timestamps(ts: str, fmt: TimeFormat) -> tuple[int | float, int | float]:
    """Rule D1's reading of one `timestamps` value: VTimeLLM's character positions for the default format."""
    if fmt == DEFAULT_TIME_FORMAT:
        return int(ts[5:7]), int(ts[-2:])
    m = _regexes(fmt)[2].search(ts)
    if not m:
        raise ValueError(f"no span in {ts!r}")
    return _number(m.group(1), fmt), _number(m.group(2), fmt)


def _json_items(answer: str, fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> list[tuple[int, int, str]] | None:
    m = JSON_LIST_RE.search(answer)
    if not m:
        return None
    try:
        items = json.loads(m.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(items, list):
        return None
    out = []
    for item in items:  # rule D2: stop at the first malformed item
        try:
            out.append((*_timestamps(item["timestamps"], fmt), str(item["event"])))
        except (KeyError, TypeError, ValueError, IndexError):
            break
    return out


def _plain_items(answer: str, fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> list[tuple[int, int, str]]:
    matches = list(_regexes(fmt)[1].finditer(answer))
    out = []
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(answer)
        out.append((_number(m.group(1), fmt), _number(m.group(2), fmt), answer[m.end():end].strip()))
    return out


def merge_similar(items: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Rule D4 on (start, end, sentence) positions."""
    merged: list[tuple[int, int, str]] = []
    for s, e, text in items:
        if merged:
            ps, pe, ptext = merged[-1]
            if difflib.SequenceMatcher(None, ptext, text).ratio() > MERGE_RATIO and -1 <= s - pe <= 1:
                merged[-1] = (ps, e, ptext)
                continue
        merged.append((s, e, text))
    return merged


def parse_dense_captions(answer: str, plain_text: bool = True,
                         fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> list[tuple[int, int, str]] | None:
    """Rules D1–D4 and D6: merged (start, end, sentence) positions, or None when nothing could be parsed.

    `plain_text=False` is VTimeLLM's reading: JSON only (rule D3 off)."""
    items = _json_items(answer, fmt)
    if plain_text and not items and '"timestamps"' not in answer:
        items = _plain_items(answer, fmt)
    return merge_similar(items) if items else None


def dense_caption_events(answer: str, duration: float, plain_text: bool = True,
                         fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> list[tuple[tuple[float, float], str]] | None:
    """Rules D1–D6: events ((start_s, end_s), sentence), or None when unparsable (`plain_text` as above)."""
    items = parse_dense_captions(answer, plain_text, fmt)
    if items is None:
        return None
    if fmt == DEFAULT_TIME_FORMAT:
        return [(dense_caption_span(s, e, duration), text) for s, e, text in items]
    return [(fmt.dense_span(s, e, duration), text) for s, e, text in items]


def seconds_note(answer: str, duration: float, fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> str:
    """Every "aa to bb" in an answer with its seconds, for people reading answers (vtl-chat): "… (12.3–45.6 s)"."""
    def repl(m: re.Match) -> str:
        a, b = fmt.grounding_span(_number(m.group(1), fmt), _number(m.group(3), fmt), duration)
        return f"{m.group(0)} ({a:.1f}–{b:.1f} s)"
    return _regexes(fmt)[0].sub(repl, answer)
