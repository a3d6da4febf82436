"""The question templates of VTimeLLM's stage-2 boundary QA, as data.

Stage 2 (reference §3, paper App. B Box 3) has ten templates per question type, thirty in all:
- `D1`..`D10` dense video captioning, single turn, no placeholder; the answer lists every event
  ("From ss to ee, caption." in time order, as in the released stage2.json);
- `E1`..`E10` event captioning: `{s}` and `{e}` are the rendered timestamps of one event, the answer is its caption;
- `T1`..`T10` temporal grounding: `{T}` is the event's sentence as inserted into a question, the answer is
  "From ss to ee.".
The evaluation queries live in pipeline.contract.queries (build-qa writes them, vtl-eval reads them). Template ids
are what `conversation.json` records, so keep an id's text fixed once data has been built with it.
"""
from __future__ import annotations

DENSE_CAPTIONING: dict[str, str] = {
    "D1": "Could you please detail the events that took place during different time segments in the video?",
    "D2": "I'm curious about what happened at different points in the video. Could you please describe the events?",
    "D3": "Could you provide a summary of the incidents that occurred at various timestamps in the video?",
    "D4": "I'd like to know what events transpired during specific time intervals in the video. "
          "Could you please elaborate?",
    "D5": "Can you give me a breakdown of the occurrences at different timestamps in the video?",
    "D6": "I'm interested in understanding the events that unfolded at different points in the video. "
          "Could you please specify?",
    "D7": "Could you outline the incidents that happened during different time periods in the video?",
    "D8": "I'm trying to grasp the sequence of events in the video. "
          "Could you please outline what happened at different times?",
    "D9": "Can you go through the video and describe what took place at different time intervals?",
    "D10": "I'd appreciate it if you could provide a detailed account of the events that occurred at different "
           "timestamps in the video.",
}

EVENT_CAPTIONING: dict[str, str] = {
    "E1": "Can you describe what occurred from {s} to {e} in the video?",
    "E2": "Could you tell me what happened from {s} to {e} in the video?",
    "E3": "What transpired from {s} to {e} in the video?",
    "E4": "Describe what took place from {s} to {e} in the video.",
    "E5": "Tell me about the events from {s} to {e} in the video.",
    "E6": "What was going on from {s} to {e} in the video?",
    "E7": "Please recount what occurred from {s} to {e} in the video.",
    "E8": "Explain what happened from {s} to {e} in the video.",
    "E9": "Provide details about the events from {s} to {e} in the video.",
    "E10": "Share what transpired from {s} to {e} in the video.",
}

TEMPORAL_GROUNDING: dict[str, str] = {
    "T1": "During which frames can we see {T} happening in the video?",
    "T2": "Between which frames is {T} visible in the video?",
    "T3": "At what point in the video can we observe {T} taking place?",
    "T4": "Between which two frames can we witness {T} occurring in the video?",
    "T5": "During which frames in the video can we observe {T} happening?",
    "T6": "At which time interval in the video can we see {T} occurring?",
    "T7": "Between which frames can we find {T} taking place in the video?",
    "T8": "At what point in the video can we witness {T} happening?",
    "T9": "Between which two frames in the video can we observe {T} taking place?",
    "T10": "During which frames does {T} occur in the video?",
}

TEMPLATES: dict[str, str] = {**DENSE_CAPTIONING, **EVENT_CAPTIONING, **TEMPORAL_GROUNDING}
"""Every stage-2 template by id."""

DENSE_ANSWER = "From {s} to {e}, {T}"
"""One event of a dense-captioning answer; events are joined by a space (released stage2.json layout)."""
EVENT_ANSWER = "{T}"
GROUNDING_ANSWER = "From {s} to {e}."
