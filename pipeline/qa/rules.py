"""Conversations from events, as pure functions: the rules build-qa and import-vtimellm apply to one sample.

- Stage 1 (`plain`): `<video>\\n` then the caption (reference §4.3).
- Stage 2: templated boundary QA (reference §3): with probability `dense_ratio` one dense-captioning turn listing every
  event in time order, else one turn per event, each randomly event captioning or temporal grounding, in shuffled
  order. The random choices come from `sample_rng(seed, key)` only, so a (seed, key) pair always gives the same text.
- Stage 3 / imports: `<sK>`/`<eK>` placeholders replaced from `meta.token` in every turn (reference §2.4;
  pipeline.qa.placeholders, re-exported here).
- Evaluation: VTimeLLM's grounding and dense-captioning queries (pipeline.contract.queries) with ground truth
  (reference §6.2).
Events are cleaned first by `clean_events`; docs/build-qa.md states each rule. Times are written in the build's time
format (pipeline.contract.timing.TimeFormat; default VTimeLLM's two-digit positions): the templates only hold
`{s}`/`{e}` slots, so they are the same for every format.
"""
from __future__ import annotations

import functools
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field

from manifests.schema import Event
from pipeline.contract.conversation import VIDEO_PLACEHOLDER, video_turn
from pipeline.contract.queries import BENCHMARKS, QVH_TASKS, QVHIGHLIGHTS, dvc_query, grounding_query, qvh_query
from pipeline.contract.record import eval_record, training_record
from pipeline.contract.timing import DEFAULT_TIME_FORMAT, TimeFormat
from pipeline.qa import templates
from pipeline.qa.placeholders import (  # noqa: F401  (re-exported: the rules' callers take them here)
    PLACEHOLDER_RE,
    leftover_placeholders,
    place_video_token,
    render_placeholders,
)

OVERLAP_RULES = ("keep", "drop")
_END_PUNCT = ".!?"


@dataclass
class CleanEvents:
    """Events a sample can use (`kept`, original order), those dropped by reason, and notes on kept ones."""

    kept: list[Event] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)


def sample_rng(seed: int, key: str) -> random.Random:
    """The random stream of one sample: seeded from the text "seed:key" (hashed by `random` itself with SHA-512,
    unlike Python's salted `hash`), so it is the same in every process and on every machine."""
    return random.Random(f"{seed}:{key}")


def _number(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _one_event(raw: dict, duration: float, out: CleanEvents) -> Event | None:
    caption = raw.get("caption")
    caption = " ".join(caption.split()) if isinstance(caption, str) else ""
    start, end = _number(raw.get("start")), _number(raw.get("end"))
    if not caption:
        reason = "empty_caption"
    elif start is None or end is None:
        reason = "bad_time"
    elif end < start:
        reason = "inverted"
    elif start >= duration or end <= 0:
        reason = "outside_window"
    else:
        reason = None
    if reason:
        out.dropped[reason] += 1
        return None
    clipped = (max(start, 0.0), min(end, duration))
    if clipped != (start, end):
        out.notes["clipped"] += 1
    if clipped[1] <= clipped[0]:
        out.dropped["zero_length"] += 1
        return None
    return Event(clipped[0], clipped[1], caption)


def clean_events(raw_events: list[dict], duration: float, overlap: str = "keep") -> CleanEvents:
    """Apply the event rules: drop empty captions, non-numeric or inverted times, events wholly outside [0, duration],
    zero-length events and exact duplicates; clip events that stick out of the window (noted as `clipped`).
    Overlapping events are kept and noted (`overlap="keep"`) or, with `"drop"`, an event overlapping an
    earlier-starting kept one is dropped."""
    if overlap not in OVERLAP_RULES:
        raise ValueError(f"overlap must be one of {OVERLAP_RULES}, got {overlap!r}")
    out = CleanEvents()
    seen: set[Event] = set()
    for raw in raw_events or ():
        ev = _one_event(raw if isinstance(raw, dict) else {}, duration, out)
        if ev is None:
            continue
        if ev in seen:
            out.dropped["duplicate"] += 1
            continue
        seen.add(ev)
        out.kept.append(ev)
    overlapping = _overlapping(out.kept)
    if overlapping and overlap == "drop":
        out.dropped["overlapping"] += len(overlapping)
        out.kept = [ev for i, ev in enumerate(out.kept) if i not in overlapping]
    elif overlapping:
        out.notes["overlapping"] += len(overlapping)
    return out


def _overlapping(events: list[Event]) -> set[int]:
    """Indices of events that overlap (share more than an instant with) an earlier-starting event that is itself
    not overlapping, scanning in (start, end) order."""
    order = sorted(range(len(events)), key=lambda i: (events[i].start, events[i].end))
    bad: set[int] = set()
    last_end = -math.inf
    for i in order:
        if events[i].start < last_end:
            bad.add(i)
        else:
            last_end = events[i].end
    return bad


def as_sentence(caption: str) -> str:
    """A caption as an answer sentence: whitespace collapsed, case as published, a final period added when the
    caption has no final punctuation."""
    text = " ".join(caption.split())
    return text if text.endswith(tuple(_END_PUNCT)) else text + "."


def as_phrase(caption: str) -> str:
    """A caption inside a grounding question: whitespace collapsed, final punctuation removed, first letter
    lower-cased when the first word is plainly capitalised ("A man" → "a man"), kept when it looks like an acronym
    or "I" ("NBA players", "I")."""
    text = " ".join(caption.split()).rstrip(_END_PUNCT + " ")
    first = text.split(" ", 1)[0]
    if first and first != "I" and first[0].isupper() and first[1:] == first[1:].lower():
        text = text[0].lower() + text[1:]
    return text


def _span(ev: Event, duration: float, fmt: TimeFormat) -> tuple[str, str]:
    return fmt.render(ev.start, duration), fmt.render(ev.end, duration)


def dense_captioning_turns(events: list[Event], duration: float, template_id: str,
                           fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> list[dict]:
    """One turn: a D template, answered with every event in time order ("From ss to ee, caption." joined by spaces)."""
    ordered = sorted(events, key=lambda ev: (ev.start, ev.end))
    answer = " ".join(templates.DENSE_ANSWER.format(s=s, e=e, T=as_sentence(ev.caption))
                      for ev in ordered for s, e in [_span(ev, duration, fmt)])
    return [video_turn(templates.DENSE_CAPTIONING[template_id]),
            {"from": "gpt", "value": answer}]


def event_turn(ev: Event, duration: float, template_id: str,
               fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> tuple[str, str]:
    """(question, answer) for one event: E templates ask for the caption, T templates for the span."""
    s, e = _span(ev, duration, fmt)
    if template_id in templates.EVENT_CAPTIONING:
        question = templates.EVENT_CAPTIONING[template_id].format(s=s, e=e)
        return question, templates.EVENT_ANSWER.format(T=as_sentence(ev.caption))
    question = templates.TEMPORAL_GROUNDING[template_id].format(T=as_phrase(ev.caption))
    return question, templates.GROUNDING_ANSWER.format(s=s, e=e)


def multi_turn_turns(pairs: list[tuple[Event, str]], duration: float,
                     fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> list[dict]:
    turns: list[dict] = []
    for i, (ev, template_id) in enumerate(pairs):
        question, answer = event_turn(ev, duration, template_id, fmt)
        turns.append(video_turn(question) if i == 0 else {"from": "human", "value": question})
        turns.append({"from": "gpt", "value": answer})
    return turns


def stage2_conversation(events: list[Event], duration: float, seed: int, key: str, dense_ratio: float = 0.2,
                        grounding_ratio: float = 0.5, fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> dict:
    """The stage-2 conversation of one sample (needs at least one event). Draw order, fixed so that output stays
    reproducible: dense or multi-turn, then (dense) template id, or (multi-turn) per event in order grounding or
    captioning + template id, then the shuffle of the turns."""
    if not events:
        raise ValueError(f"{key}: stage-2 QA needs at least one event")
    rng = sample_rng(seed, key)
    if rng.random() < dense_ratio:
        template_id = rng.choice(list(templates.DENSE_CAPTIONING))
        return training_record(dense_captioning_turns(events, duration, template_id, fmt), 2, "dense_captioning",
                               [template_id], seed)
    pairs = []
    for ev in events:
        pool = templates.TEMPORAL_GROUNDING if rng.random() < grounding_ratio else templates.EVENT_CAPTIONING
        pairs.append((ev, rng.choice(list(pool))))
    rng.shuffle(pairs)
    return training_record(multi_turn_turns(pairs, duration, fmt), 2, "multi_turn", [t for _, t in pairs], seed)


def _template_pattern(text: str, time: str) -> re.Pattern:
    pattern = re.escape(text)
    for slot, sub in (("{s}", time), ("{e}", time), ("{T}", r".+")):
        pattern = pattern.replace(re.escape(slot), sub)
    return re.compile(pattern, re.S)


@functools.lru_cache(maxsize=16)
def _patterns(fmt: TimeFormat) -> list[tuple[str, re.Pattern]]:
    time = fmt.pattern.replace("(", "(?:", 1)  # the time's regex, its number group made non-capturing
    return [(tid, _template_pattern(text, time)) for tid, text in templates.TEMPLATES.items()]


def identify_template(question: str, fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> str | None:
    """The id of the stage-2 template a rendered question was made from (`<video>\n` ignored), or None. Used to
    count template use in imported data and to check that built questions parse back to their recorded ids."""
    text = question.replace(VIDEO_PLACEHOLDER, "").strip()
    return next((tid for tid, pattern in _patterns(fmt) if pattern.fullmatch(text)), None)


def stage1_conversation(caption: str | None) -> dict | None:
    """The `plain` stage-1 sample: human `<video>\\n`, answer = the caption (None when there is no caption)."""
    text = " ".join(caption.split()) if isinstance(caption, str) else ""
    if not text:
        return None
    return training_record([video_turn(""), {"from": "gpt", "value": text}], 1, "caption")


def dialogue_conversation(turns: list[dict], source: str, stage: int = 3, form: str = "dialogue") -> dict:
    return training_record(turns, stage, form, source=source)


def shift_timestamps(conv: dict, shift: int) -> dict:
    """Test-only: move every two-digit timestamp token of the turns by `shift` positions, clamped to 00..99 (captions
    of the synthetic set hold no two-digit numbers, so only rendered timestamps change)."""
    def move(m: re.Match) -> str:
        return f"{min(max(int(m.group(0)) + shift, 0), 99):02d}"

    turns = [{**t, "value": re.sub(r"(?<!\d)\d\d(?!\d)", move, t["value"])} for t in conv["turns"]]
    return {**conv, "turns": turns, "timestamp_shift": shift}


def eval_conversation(benchmark: str, key: str, raw_events: list[dict],
                      fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> tuple[dict | None, Counter]:
    """Evaluation sample: `grounding` → one query per event with its published span; `dvc` → the §6.2 query plus
    the ground-truth events. Events with an empty sentence or non-numeric times are skipped and counted; None when
    no event is left."""
    dropped: Counter = Counter()
    events = []
    for raw in raw_events or ():
        raw = raw if isinstance(raw, dict) else {}
        sentence = raw.get("caption") if isinstance(raw.get("caption"), str) else ""
        start, end = _number(raw.get("start")), _number(raw.get("end"))
        if not sentence.strip():
            dropped["empty_caption"] += 1
        elif start is None or end is None:
            dropped["bad_time"] += 1
        else:
            events.append({"span": [start, end], "sentence": sentence.strip()})
    if not events:
        return None, dropped
    if benchmark == "grounding":
        queries = [{"id": f"{key}_q{i}", "query": grounding_query(ev["sentence"]), "sentence": ev["sentence"],
                    "span": ev["span"]} for i, ev in enumerate(events)]
        return eval_record(benchmark, queries), dropped
    if benchmark == "dvc":
        query = {"id": f"{key}_q0", "query": dvc_query(fmt), "sentence": None, "span": None}
        return eval_record(benchmark, [query], events), dropped
    if benchmark == QVHIGHLIGHTS:
        return eval_record(benchmark, qvh_queries(key, events)), dropped
    raise ValueError(f"benchmark must be one of {', '.join(BENCHMARKS)}, got {benchmark!r}")


def qvh_queries(key: str, events: list[dict]) -> list[dict]:
    """QVHighlights: the manifest's events are every query's windows with the query as sentence; each distinct query
    (in order) is asked twice, moment retrieval (`{key}_q{i}_mr`) and highlight detection (`_hd`). `windows` keeps
    all of its windows, `span` the first (the evaluation record's one span)."""
    by_sentence: dict[str, list] = {}
    for ev in events:
        by_sentence.setdefault(ev["sentence"], []).append(ev["span"])
    return [{"id": f"{key}_q{i}_{task}", "query": qvh_query(task, sentence), "sentence": sentence, "span": spans[0],
             "windows": spans} for i, (sentence, spans) in enumerate(by_sentence.items()) for task in QVH_TASKS]
