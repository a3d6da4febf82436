"""The turn rules every part checks conversations with (`turns_problem`: build-qa and import-vtimellm, inspect
--verify through pipeline.contract.record, the trainer through `encode`), the `<video>` literal and the first turn
that carries it (`video_turn`). pipeline.contract.conversation, which encodes the turns, re-exports these names."""
from __future__ import annotations

VIDEO_PLACEHOLDER = "<video>"


def video_turn(question: str) -> dict:
    """The first human turn of every conversation: `<video>`, a newline, then the question (reference §4.3)."""
    return {"from": "human", "value": f"{VIDEO_PLACEHOLDER}\n{question}"}


def turns_problem(turns, ending: str | None = "gpt", video: bool = True) -> str | None:
    """What breaks the turn rules, or None: the one validator of turns that build-qa, import-vtimellm, inspect
    --verify and the trainer share. Turns are a non-empty list of {"from": "human"|"gpt", "value": str} that
    alternate from a human turn and end with `ending` ("gpt": a training sample, "human": a generation prompt,
    None: either); with `video`, `<video>` appears exactly once, in the first human turn."""
    if not isinstance(turns, list) or not turns:
        return "conversation has no turns"
    for i, turn in enumerate(turns):
        want = "human" if i % 2 == 0 else "gpt"
        if not isinstance(turn, dict) or turn.get("from") != want:
            got = turn.get("from") if isinstance(turn, dict) else turn
            return f"turn {i} must come from {want!r} (turns alternate human/gpt), got {got!r}"
        if not isinstance(turn.get("value"), str):
            return f"turn {i} has no text value"
    last = turns[-1]["from"]
    if ending == "human" and last != "human":
        return "a generation prompt needs the conversation to end with a human turn"
    if ending == "gpt" and last != "gpt":
        return "a training sample needs the conversation to end with a gpt turn"
    if video:
        count = sum(t["value"].count(VIDEO_PLACEHOLDER) for t in turns)
        if count != 1:
            return f"{VIDEO_PLACEHOLDER} must appear exactly once in the conversation, found {count}"
        if VIDEO_PLACEHOLDER not in turns[0]["value"]:
            return f"{VIDEO_PLACEHOLDER} must be in the first human turn"
    return None


def check_turns(turns, ending: str | None = "gpt", video: bool = True) -> None:
    """`turns_problem` as a ValueError."""
    if problem := turns_problem(turns, ending, video):
        raise ValueError(problem)
