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
"""
from __future__ import annotations

import difflib
import json
import re

from pipeline.contract.timing import dense_caption_span, grounding_span

GROUNDING_RE = re.compile(r"(\d{2}) (to|and) (\d{2})")
JSON_LIST_RE = re.compile(r"\[.*\]")
PLAIN_EVENT_RE = re.compile(r"from (\d{2}) to (\d{2})\b\s*[,:]?\s*", re.IGNORECASE)
MERGE_RATIO = 0.98

Positions = tuple[int, int]


def parse_grounding(answer: str) -> Positions | None:
    """Rule G1: the first "aa to bb" / "aa and bb" pair as ints, or None."""
    m = GROUNDING_RE.search(answer)
    return (int(m.group(1)), int(m.group(3))) if m else None


def grounding_answer_span(answer: str, duration: float) -> tuple[float, float] | None:
    """Rules G1–G3: the answer's span in seconds, or None when unparsable."""
    pos = parse_grounding(answer)
    return grounding_span(pos[0], pos[1], duration) if pos else None


def _json_items(answer: str) -> list[tuple[int, int, str]] | None:
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
            ts = item["timestamps"]
            out.append((int(ts[5:7]), int(ts[-2:]), str(item["event"])))
        except (KeyError, TypeError, ValueError, IndexError):
            break
    return out


def _plain_items(answer: str) -> list[tuple[int, int, str]]:
    matches = list(PLAIN_EVENT_RE.finditer(answer))
    out = []
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(answer)
        out.append((int(m.group(1)), int(m.group(2)), answer[m.end():end].strip()))
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


def parse_dense_captions(answer: str, plain_text: bool = True) -> list[tuple[int, int, str]] | None:
    """Rules D1–D4 and D6: merged (start, end, sentence) positions, or None when nothing could be parsed.

    `plain_text=False` is VTimeLLM's reading: JSON only (rule D3 off)."""
    items = _json_items(answer)
    if plain_text and not items and '"timestamps"' not in answer:
        items = _plain_items(answer)
    return merge_similar(items) if items else None


def dense_caption_events(answer: str, duration: float, plain_text: bool = True
                         ) -> list[tuple[tuple[float, float], str]] | None:
    """Rules D1–D6: events ((start_s, end_s), sentence), or None when unparsable (`plain_text` as above)."""
    items = parse_dense_captions(answer, plain_text)
    if items is None:
        return None
    return [(dense_caption_span(s, e, duration), text) for s, e, text in items]


def seconds_note(answer: str, duration: float) -> str:
    """Every "aa to bb" in an answer with its seconds, for people reading answers (vtl-chat): "… (12.3–45.6 s)"."""
    def repl(m: re.Match) -> str:
        a, b = grounding_span(int(m.group(1)), int(m.group(3)), duration)
        return f"{m.group(0)} ({a:.1f}–{b:.1f} s)"
    return GROUNDING_RE.sub(repl, answer)
