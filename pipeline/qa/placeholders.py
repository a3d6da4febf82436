"""Stage 3 and imported dialogues (reference §2.4): VTimeLLM's `<sK>`/`<eK>` timestamp placeholders rendered from
`meta.token` in every turn, the ones left over, and the contract's `<video>\\n` put at the start of the first human
turn. pipeline.qa.rules re-exports these names with the other conversation rules."""
from __future__ import annotations

import re

from pipeline.contract.conversation import VIDEO_PLACEHOLDER, video_turn
from pipeline.contract.timing import DEFAULT_TIME_FORMAT, TimeFormat

PLACEHOLDER_RE = re.compile(r"<[se]\d+>")
"""VTimeLLM's timestamp placeholders: `<s0>`, `<e0>` (stage 2, 0-based), `<s1>`, `<e1>` (stage 3, 1-based)."""


def render_placeholders(turns: list[dict], tokens: dict, duration: float,
                        fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> list[dict]:
    """VTimeLLM's loader rule: every (placeholder, seconds) of `tokens`, rendered against `duration` (quantised, in
    the default format), replaced in every turn, human and gpt alike."""
    rendered = {name: fmt.render(float(seconds), duration) for name, seconds in (tokens or {}).items()}
    out = []
    for turn in turns:
        value = turn["value"]
        for name, text in rendered.items():
            value = value.replace(name, text)
        out.append({"from": turn["from"], "value": value})
    return out


def leftover_placeholders(turns: list[dict]) -> list[str]:
    return sorted({m for t in turns for m in PLACEHOLDER_RE.findall(t["value"])})


def place_video_token(turns: list[dict]) -> tuple[list[dict], str | None]:
    """Ensure the contract's `<video>\\n` at the start of the first human turn. Returns the turns and a note:
    None (already so), "video_token_moved" (found elsewhere in that turn) or "video_token_added" (absent).
    Raises ValueError on a second `<video>` or a conversation that does not start with a human turn."""
    if not turns or turns[0].get("from") != "human":
        raise ValueError("conversation does not start with a human turn")
    later = "".join(t["value"] for t in turns[1:])
    if sum(t["value"].count(VIDEO_PLACEHOLDER) for t in turns) > 1 or VIDEO_PLACEHOLDER in later:
        raise ValueError(f"more than one {VIDEO_PLACEHOLDER}, or {VIDEO_PLACEHOLDER} outside the first human turn")
    first = turns[0]["value"]
    if first.startswith(VIDEO_PLACEHOLDER + "\n"):
        return turns, None
    note = "video_token_moved" if VIDEO_PLACEHOLDER in first else "video_token_added"
    rest = first.replace(VIDEO_PLACEHOLDER, "").strip()
    return [video_turn(rest), *turns[1:]], note
