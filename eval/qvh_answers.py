"""Reading a model's QVHighlights answers into the benchmark's submission (`pred_relevant_windows`,
`pred_saliency_scores`); the queries are `pipeline.contract.queries.MOMENT_QUERY` and `HIGHLIGHT_QUERY`.

Moment retrieval (`moment_windows`):
  M1. Every "aa to bb" / "aa and bb" pair of two-digit positions (grounding's rule G1, all matches, in order) is a
      moment; seconds as grounding (a/100·D, b/100·D); a reversed pair is put in order; clipped to [0, D].
  M2. The answer lists the most relevant first: the i-th distinct moment (0-based) scores 1/(i+1).
  M3. Nothing matched ⇒ unparsable: no windows (the query's AP and R1 are 0).

Highlight detection (`highlight_positions`, `clip_scores`):
  H1. The answer is split at its first "score(s)" word: the positions are the one- or two-digit whole numbers
      before it, the saliency scores the numbers after it (any "1.5", "3" form).
  H2. Positions and scores pair in order; positions without a score (none given, or fewer) score 1.0, surplus
      scores are ignored.
  H3. A position p names the 2-second clip ⌊(p/100·D) / 2⌋, the last clip at most; a clip named twice keeps its
      highest score; clips never named score 0. The list has ⌊D/2⌋ entries, the benchmark's clip count.
  H4. No position ⇒ unparsable: every clip scores 0.
"""
from __future__ import annotations

import re

from eval.parse import GROUNDING_RE
from pipeline.contract.timing import grounding_span

CLIP_SECONDS = 2.0
SCORE_WORD_RE = re.compile(r"\bscores?\b", re.IGNORECASE)
POSITION_RE = re.compile(r"(?<![\d.])\d{1,2}(?!\d|\.\d)")
NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")


def moment_windows(answer: str, duration: float) -> list[list[float]]:
    """Rules M1–M3: [[start_s, end_s, score], ...], most relevant first."""
    out: list[list[float]] = []
    seen = set()
    for m in GROUNDING_RE.finditer(answer):
        a, b = sorted((int(m.group(1)), int(m.group(3))))
        if (a, b) in seen:
            continue
        seen.add((a, b))
        start, end = (min(max(x, 0.0), duration) for x in grounding_span(a, b, duration))
        out.append([round(start, 4), round(end, 4), round(1.0 / (len(out) + 1), 4)])
    return out


def highlight_positions(answer: str) -> list[tuple[int, float]]:
    """Rules H1–H2: (position 0–99, saliency score) pairs in answer order."""
    m = SCORE_WORD_RE.search(answer)
    head, tail = (answer[:m.start()], answer[m.end():]) if m else (answer, "")
    positions = [int(x) for x in POSITION_RE.findall(head)]
    scores = [float(x) for x in NUMBER_RE.findall(tail)]
    return [(p, scores[i] if i < len(scores) else 1.0) for i, p in enumerate(positions)]


def clip_scores(pairs: list[tuple[int, float]], duration: float) -> list[float]:
    """Rules H3–H4: a saliency score per 2-second clip of the video."""
    n = int(duration / CLIP_SECONDS)
    scores = [0.0] * n
    for p, s in pairs:
        if n:
            c = min(n - 1, int(grounding_span(p, p, duration)[0] // CLIP_SECONDS))  # the position's start time
            scores[c] = max(scores[c], s)
    return scores


def submission_line(qid: str, query: str, vid: str, duration: float, mr_answer: str | None,
                    hd_answer: str | None) -> dict:
    """One line of the benchmark's submission JSONL from the two answers (None: that task was not asked)."""
    line: dict = {"qid": qid, "query": query, "vid": vid}
    if mr_answer is not None:
        line["pred_relevant_windows"] = moment_windows(mr_answer, duration)
    if hd_answer is not None:
        line["pred_saliency_scores"] = clip_scores(highlight_positions(hd_answer), duration)
    return line
