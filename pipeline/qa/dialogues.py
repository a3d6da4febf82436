"""VTimeLLM's released JSON (stage2.json, stage3.json, LLaVA's 558K file): loading, sample keys and turn rendering,
shared by build-qa stage 3 and import-vtimellm.

Key rule: key = make_key(record id); an id that occurs once keeps that key, an id that occurs k > 1 times (stage3.json
has two dialogues per ActivityNet/DiDeMo video) gives `{key}-d0` … `{key}-d{k-1}` in file order.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from manifests.schema import make_key
from pipeline.contract.conversation import turns_problem
from pipeline.contract.timing import DEFAULT_TIME_FORMAT, TimeFormat
from pipeline.qa.rules import leftover_placeholders, place_video_token, render_placeholders


class RecordError(Exception):
    """A record that cannot become a sample; `reason` is the short word that goes to errors.jsonl."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class KeyedRecord:
    """A record with its sample key (None when the record has no usable id) and the key of its video."""

    key: str | None
    video_key: str | None
    record: dict
    position: int


def load_records(path: str | Path) -> list[dict]:
    """The JSON list of a VTimeLLM/LLaVA data file. A file that is not a JSON list is a wrong input: raise."""
    from infra import storage

    try:
        data = json.loads(storage.read_bytes(path))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path} as JSON: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _video_key(record) -> str | None:
    rid = record.get("id") if isinstance(record, dict) else None
    if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid).strip():
        return make_key(str(rid))
    return None


def assign_keys(records: list) -> list[KeyedRecord]:
    """Apply the key rule to every record, in file order. Keys are unique; a record whose key would repeat one
    already given (or that has no id) gets key None and is reported by the caller."""
    return list(iter_keyed(records, Counter(k for k in map(_video_key, records) if k is not None)))


def iter_keyed(records: Iterable, counts: Counter) -> Iterator[KeyedRecord]:
    """`assign_keys` one record at a time, given the count of each video key over the whole file (a first pass)."""
    seen: Counter = Counter()
    given: set[str] = set()
    for pos, record in enumerate(records):
        vkey, key = _video_key(record), None
        if vkey is not None:
            key = vkey if counts[vkey] == 1 else f"{vkey}-d{seen[vkey]}"
            seen[vkey] += 1
            if key in given:
                key = None
            else:
                given.add(key)
        yield KeyedRecord(key, vkey, record if isinstance(record, dict) else {}, pos)


def record_label(kr: KeyedRecord) -> str:
    """What an error record names when the record has no key of its own."""
    return kr.key or kr.video_key or f"record{kr.position}"


def check_turns(conversations) -> list[dict]:
    """A record's turns, checked by the contract's turn rules (`<video>` is placed afterwards) and reduced to
    from/value; raises RecordError("bad_conversation")."""
    if problem := turns_problem(conversations, ending="gpt", video=False):
        raise RecordError("bad_conversation", problem)
    return [{"from": t["from"], "value": t["value"]} for t in conversations]


def record_tokens(record: dict) -> dict:
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    tokens = meta.get("token") or {}
    if not isinstance(tokens, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in tokens.values()):
        raise RecordError("bad_token", "meta.token is not a mapping of placeholder to seconds")
    return tokens


def render_dialogue(record: dict, duration: float | None,
                    fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> tuple[list[dict], str | None]:
    """A record's turns with every placeholder of meta.token rendered against `duration` and `<video>` placed by the
    contract. Returns (turns, note from place_video_token); raises RecordError."""
    turns = check_turns(record.get("conversations"))
    tokens = record_tokens(record)
    if tokens:
        if not (isinstance(duration, (int, float)) and math.isfinite(duration) and duration > 0):
            raise RecordError("bad_duration", f"duration {duration!r} cannot quantise timestamps")
        turns = render_placeholders(turns, tokens, float(duration), fmt)
    left = leftover_placeholders(turns)
    if left:
        raise RecordError("unrendered_placeholder", f"no time in meta.token for {', '.join(left[:5])}")
    try:
        return place_video_token(turns)
    except ValueError as exc:
        raise RecordError("bad_video_token", str(exc)) from exc


def record_duration(record: dict) -> float | None:
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    d = meta.get("duration")
    return float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) else None
