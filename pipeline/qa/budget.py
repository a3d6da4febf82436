"""Token-budget check: how many positions a training sample takes, so samples longer than the trainer's context are
reported at build time instead of being truncated silently by the collator (reference §4.2: VTimeLLM truncates at
`model_max_length` 2048, counting the video as one token, and never after the features are spliced in).

The count is the trainer's own: `pipeline.contract.conversation.encode` gives the ids the trainer trains on (one
`<video>` sentinel among them), and the sentinel is replaced by the N feature rows, exactly as the loader counts
(`len(input_ids) - 1 + N`). So every conversation format the trainer knows can be budgeted, with the same number.
The tokenizer is a local Hugging Face tokenizer folder; transformers is imported only when a check is asked for.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.contract.conversation import FORMATS, encode


def positions(turns: list[dict], tokenizer, fmt: str, num_features: int) -> int:
    """Positions of one training sample as the trainer lays it out: text ids, the video sentinel → feature rows."""
    return len(encode(turns, tokenizer, fmt)) - 1 + num_features


@dataclass
class TokenBudget:
    """Counts positions per sample and remembers the samples over `max_tokens`."""

    tokenizer_path: Path
    max_tokens: int
    fmt: str
    option: str = "--tokenizer"
    """The option that named the tokenizer (`--llm` when build-qa --generate counts with the LLM's own)."""
    over: list[str] = field(default_factory=list)
    max_seen: int = 0
    checked: int = 0

    def __post_init__(self) -> None:
        from pipeline.qa.llm_source import HubUnavailable, load_tokenizer

        if self.fmt not in FORMATS:
            raise ValueError(f"token-budget format must be one of {FORMATS}, got {self.fmt!r}")
        try:
            self.tokenizer = load_tokenizer(str(self.tokenizer_path), self.option)
        except HubUnavailable:
            raise
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot load a tokenizer from {self.tokenizer_path}: {exc}") from exc

    def positions(self, turns: list[dict], num_features: int) -> int:
        return positions(turns, self.tokenizer, self.fmt, num_features)

    def check(self, key: str, turns: list[dict], num_features: int) -> int:
        n = self.positions(turns, num_features)
        self.checked += 1
        self.max_seen = max(self.max_seen, n)
        if n > self.max_tokens:
            self.over.append(key)
        return n

    def report(self, listed: int = 100) -> dict:
        return {"checked": True, "tokenizer": str(self.tokenizer_path), "format": self.fmt,
                "max_tokens": self.max_tokens, "samples_checked": self.checked, "over": len(self.over),
                "over_keys": self.over[:listed], "max_seen": self.max_seen}


def not_checked(reason: str, max_tokens: int) -> dict:
    return {"checked": False, "reason": reason, "max_tokens": max_tokens, "over": 0}


def default_format(stage: str | int) -> str:
    """Stage 1 trains on `plain`, stages 2 and 3 on `v1` (reference §5.1)."""
    return "plain" if str(stage) == "1" else "v1"
