"""Stage-3 dialogues written by a text LLM from a video's events, as pure functions: the prompt, the parser of the
LLM's `User:`/`Assistant:` lines, the validation of every dialogue, and the conversation.json record.

VTimeLLM wrote its stage-3 dialogues with Vicuna-7B from each video's events, timestamps given only as symbols
`<s1>`, `<e1>`, ... in event order (paper App. B Box 4; reference §2.3, §3). The prompt here follows Box 4's shape in
our own words: persona, instructions, one worked example, then `Events:` lines `from <s_k> to <e_k>: T_k.` and
`Dialogue:`. Placeholders stay symbols through parsing and validation, and are rendered against the features'
duration by `rules.render_placeholders`, exactly as stage 3 renders `meta.token` (docs/build-qa.md).
"""
from __future__ import annotations

import re

from manifests.schema import Event
from pipeline.contract.conversation import turns_problem
from pipeline.contract.record import training_record
from pipeline.qa.rules import as_sentence, place_video_token, render_placeholders

PERSONA = ("You are an AI visual assistant that is watching a single video. You do not see the pictures; instead you "
           "are told the events of the video in the order they happen. The start and the end of event k are given as "
           "the markers <sk> and <ek>, never as numbers.")
INSTRUCTIONS = ("Write a conversation between a user who asks about this video and you, the assistant, who answers "
                "as if you were watching it. Ask about when something happens, what happens at a given moment, and "
                "how the events follow one another in time (before, after, first, last). Whenever you refer to a "
                "time, use only the markers of the events listed, such as <s1> or <e2>; never write a time as a "
                "number. Keep the answers short and true to the events. Put every turn on its own line, starting "
                "with \"User:\" or \"Assistant:\", and begin with the user.")
EXAMPLE_EVENTS = (
    Event(0.0, 1.0, "Two children stand face to face and shake their fists three times"),
    Event(1.0, 2.0, "One child shows paper and the other shows a rock"),
    Event(2.0, 3.0, "The child with paper jumps and cheers"),
    Event(3.0, 4.0, "They shake hands and start a new round"),
)
EXAMPLE_DIALOGUE = (
    ("User", "What are the children doing at the start of the video?"),
    ("Assistant", "From <s1> to <e1>, they stand face to face and shake their fists three times."),
    ("User", "When do they show their hands?"),
    ("Assistant", "From <s2> to <e2>. One shows paper, the other a rock."),
    ("User", "What happens right after that?"),
    ("Assistant", "The child with paper jumps and cheers, from <s3> to <e3>."),
    ("User", "How does the video end?"),
    ("Assistant", "From <s4> to <e4>, they shake hands and start a new round."),
)
ROLES = {"User": "human", "Assistant": "gpt"}
_TURN_RE = re.compile(r"^[ \t]*(User|Assistant)[ \t]*:", re.M)
_STOP_RE = re.compile(r"^[ \t]*(Events|Dialogue)[ \t]*:", re.M)
"""A second `Events:` or `Dialogue:` header: the LLM started another example; the dialogue ends there."""
_TAG_RE = re.compile(r"<[^<>\s]{1,16}>")
_PLACEHOLDER_RE = re.compile(r"^<([se])(\d+)>$")
_NUMBER_RE = re.compile(r"\d+(?:[.:,]\d+)*")
MIN_COPY_CHARS = 12
"""A turn counts as copied from the prompt when at least this long and found verbatim in it."""


def event_lines(events: list[Event]) -> str:
    """The `Events:` block: one `from <s_k> to <e_k>: T_k.` line per event, k from 1 in the given order."""
    return "\n".join(f"from <s{k}> to <e{k}>: {as_sentence(ev.caption)}" for k, ev in enumerate(events, start=1))


def build_prompt(events: list[Event]) -> str:
    """The whole text the LLM continues: persona, instructions, the worked example, this video's events, and
    `Dialogue:` followed by a newline."""
    example = "\n".join(f"{role}: {text}" for role, text in EXAMPLE_DIALOGUE)
    return (f"{PERSONA}\n{INSTRUCTIONS}\n\nEvents:\n{event_lines(list(EXAMPLE_EVENTS))}\nDialogue:\n{example}\n\n"
            f"Events:\n{event_lines(events)}\nDialogue:\n")


def event_order(events: list[Event]) -> list[Event]:
    """Events in the order they happen (start, then end): the k of `<sk>`/`<ek>`."""
    return sorted(events, key=lambda ev: (ev.start, ev.end))


def event_tokens(events: list[Event]) -> dict[str, float]:
    """`meta.token` of the dialogue: `<sk>`/`<ek>` → seconds, k from 1 in the given order."""
    tokens: dict[str, float] = {}
    for k, ev in enumerate(events, start=1):
        tokens[f"<s{k}>"], tokens[f"<e{k}>"] = ev.start, ev.end
    return tokens


class Rejected(Exception):
    """A generated dialogue that cannot become a sample; `reason` goes to errors.jsonl."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def parse_dialogue(text: str) -> list[dict]:
    """The LLM's continuation → turns [{"from": "human"|"gpt", "value"}] with the placeholders kept. Text before the
    first `User:`/`Assistant:` must be blank; a new `Events:`/`Dialogue:` header ends the dialogue. Lines without a
    role continue the turn above. Raises Rejected (`empty`, `no_turns`, `text_before_turns`)."""
    if not text.strip():
        raise Rejected("empty", "the LLM returned no text")
    stop = _STOP_RE.search(text)
    text = text[:stop.start()] if stop else text
    marks = list(_TURN_RE.finditer(text))
    if not marks:
        raise Rejected("no_turns", "no line starts with 'User:' or 'Assistant:'")
    if text[:marks[0].start()].strip():
        raise Rejected("text_before_turns", text[:marks[0].start()].strip()[:80])
    turns = []
    for m, nxt in zip(marks, marks[1:] + [None]):
        value = " ".join(text[m.end():nxt.start() if nxt else len(text)].split())
        turns.append({"from": ROLES[m.group(1)], "value": value})
    return turns


def _numbers(text: str) -> set[str]:
    return set(_NUMBER_RE.findall(text))


def check_dialogue(turns: list[dict], events: list[Event], prompt: str) -> None:
    """The validation rules of docs/build-qa.md, in order; raises Rejected with the first rule broken."""
    if any(not t["value"] for t in turns):
        raise Rejected("empty_turn", f"turn {next(i for i, t in enumerate(turns) if not t['value'])} has no text")
    if problem := turns_problem(turns, ending="gpt", video=False):
        raise Rejected("not_alternating", problem)
    for t in turns:
        for tag in _TAG_RE.findall(t["value"]):
            m = _PLACEHOLDER_RE.match(tag)
            if m is None:
                raise Rejected("unknown_tag", f"{tag} is not an event marker <sK>/<eK>")
            if not 1 <= int(m.group(2)) <= len(events):
                raise Rejected("unknown_event", f"{tag} names no event (the video has {len(events)})")
    allowed = set().union(*(_numbers(ev.caption) for ev in events)) if events else set()
    for t in turns:
        leaked = sorted(_numbers(_TAG_RE.sub(" ", t["value"])) - allowed)
        if leaked:
            raise Rejected("raw_timestamp", f"number {leaked[0]!r} is not an event marker and not in a caption")
    copied = sum(len(t["value"]) >= MIN_COPY_CHARS and t["value"] in prompt for t in turns)
    if copied * 2 >= len(turns):
        raise Rejected("copies_prompt", f"{copied} of {len(turns)} turns appear verbatim in the prompt")


def rendered_turns(turns: list[dict], events: list[Event], duration: float) -> list[dict]:
    """Placeholders rendered against the features' duration (stage 3's rule) and `<video>\\n` put first."""
    rendered, _ = place_video_token(render_placeholders(turns, event_tokens(events), duration))
    return rendered


def generated_record(turns: list[dict], raw: list[dict], events: list[Event], seed: int, generation: dict) -> dict:
    """The conversation.json of a generated dialogue: the rendered turns as every stage-3 sample has them, plus
    `generation` (prompt, model, sampling settings, seed, the turns with placeholders and their `token` map)."""
    record = training_record(turns, 3, "dialogue", seed=seed, source="build-qa-generate")
    record["generation"] = {**generation, "turns_with_placeholders": raw, "token": event_tokens(events)}
    return record
