"""Stage-3 dialogues for synthetic videos, templated from their events (VTimeLLM's stage3.json format).

VTimeLLM wrote its stage-3 dialogues with a text LLM from event lists, timestamps only as `<sK>`/`<eK>` symbols
(1-based, in event order) resolved from `meta.token` at load time; here a few fixed question patterns do the same job
for videos whose events are known exactly. Each dialogue asks three distinct questions in random order.
"""
from __future__ import annotations

import numpy as np

from pipeline.contract.conversation import video_turn
from pipeline.synth.media import SynthEvent

TURNS_PER_DIALOGUE = 3
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}


def _clause(caption: str) -> str:
    """"A red square appears." → "a red square appears" (to sit inside a question)."""
    return caption.rstrip(".")[0].lower() + caption.rstrip(".")[1:]


def _span(i: int) -> str:
    return f"from <s{i}> to <e{i}>"


def question_pool(events: tuple[SynthEvent, ...]) -> list[tuple[str, str]]:
    """Every (question, answer) the templates give for these events; placeholders are 1-based."""
    pool: list[tuple[str, str]] = []
    k = len(events)
    for i, ev in enumerate(events, start=1):
        x = _clause(ev.caption)
        pool += [(f"When can we see that {x}?", f"From <s{i}> to <e{i}>."),
                 (f"During which frames of the video does it show that {x}?", f"From <s{i}> to <e{i}>."),
                 (f"What happens from <s{i}> to <e{i}>?", ev.caption),
                 (f"Describe what takes place between <s{i}> and <e{i}>.", ev.caption)]
        if i < k:
            pool.append((f"What happens after {x}?", f"{events[i].caption[:-1]}, {_span(i + 1)}."))
        if i > 1:
            pool.append((f"What happens before {x}?", f"{events[i - 2].caption[:-1]}, {_span(i - 1)}."))
    pool += [("What is the first event in the video?", f"{events[0].caption[:-1]}, {_span(1)}."),
             ("What is the last event in the video?", f"{events[-1].caption[:-1]}, {_span(k)}."),
             ("How many events happen in the video?", f"There are {NUMBERS.get(k, str(k))} events.")]
    return pool


def dialogues_for(vid: str, duration: float, events: tuple[SynthEvent, ...], count: int,
                  rng: np.random.Generator) -> list[dict]:
    """`count` stage3.json records for one video: {source, id, conversations, meta: {duration, token}}."""
    token = {}
    for i, ev in enumerate(events, start=1):
        token[f"<s{i}>"], token[f"<e{i}>"] = ev.start, ev.end
    pool = question_pool(events)
    records = []
    for _ in range(count):
        picks = rng.choice(len(pool), min(TURNS_PER_DIALOGUE, len(pool)), replace=False)
        turns = []
        for n, j in enumerate(picks):
            q, a = pool[int(j)]
            turns += [video_turn(q) if n == 0 else {"from": "human", "value": q}, {"from": "gpt", "value": a}]
        records.append({"source": "synth", "id": vid, "conversations": turns,
                        "meta": {"duration": round(duration, 4), "token": token}})
    return records
