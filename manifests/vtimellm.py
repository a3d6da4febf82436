"""VTimeLLM's released `stage2.json` / `stage3.json`: `[{source, id, conversations, meta: {split, duration, token}}]`.

One video row per record: `media` = `{id}.mp4|.mkv|.webm`, `window` = `meta.split` (None: the whole file),
`duration` = `meta.duration`, `source_id` = the record's id. Events come from the `<sK>`/`<eK>` pairs of
`meta.token` (seconds relative to the window start), in K order; their captions are read from the dialogue where it
states them (`From <sK> to <eK>, caption.` in an answer, or an answer to a question about exactly that pair), else
empty. Records without `meta` (the VideoInstruct-100K part of stage 3) are rows with duration None, flagged
`no_meta`. stage3.json holds two dialogues per video: the second row's key gets a suffix (flag `key_suffixed`).
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from manifests.common import BAD_WINDOW, UNPARSABLE, check_events, count_event_stats, resolve_video
from manifests.jsonstream import expect_array
from manifests.schema import Event, ManifestRow, ReadResult, Rejection, make_key

DATASET = "vtimellm"
NO_META = "no_meta"
DURATION_MISMATCH = "duration_mismatch"
UNPAIRED = "unpaired_token"
_TOKEN = re.compile(r"^<([se])(\d+)>$")
_DENSE = re.compile(r"from <s(\d+)> to <e(\d+)>,\s*(.+?)(?=\s*from <s\d+> to <e\d+>|$)", re.S | re.I)
_PAIR = re.compile(r"<s(\d+)>.*?<e(\d+)>", re.S)


def captions_from_dialogue(turns: list) -> dict[int, str]:
    """Event number → caption, wherever the dialogue states one."""
    found: dict[int, str] = {}
    for prev, turn in zip([None] + list(turns), turns):
        if not isinstance(turn, dict) or turn.get("from") != "gpt":
            continue
        text = str(turn.get("value", "")).strip()
        for s, e, cap in _DENSE.findall(text):
            if s == e:
                found.setdefault(int(s), cap.strip().rstrip("."))
        pairs = _PAIR.findall(str(prev.get("value", ""))) if isinstance(prev, dict) else []
        if len(pairs) == 1 and pairs[0][0] == pairs[0][1] and "<" not in text and text:
            found.setdefault(int(pairs[0][0]), text.rstrip("."))
    return found


def events_from_tokens(token: dict, turns: list) -> tuple[list[Event], bool]:
    """Events of the `<sK>`/`<eK>` pairs, and whether some placeholder had no partner."""
    marks: dict[int, dict[str, float]] = {}
    for name, seconds in token.items():
        m = _TOKEN.match(name)
        if m is None:
            continue
        marks.setdefault(int(m.group(2)), {})[m.group(1)] = float(seconds)
    captions = captions_from_dialogue(turns)
    events = [Event(m["s"], m["e"], captions.get(k, "")) for k, m in sorted(marks.items()) if len(m) == 2]
    return events, any(len(m) != 2 for m in marks.values())


def _window(meta: dict) -> tuple[tuple[float, float] | None, float | None, set[str]]:
    split, duration = meta.get("split"), meta.get("duration")
    window = (float(split[0]), float(split[1])) if split is not None else None
    if window is not None and not window[0] < window[1]:
        raise ValueError(f"split {split}: start must be < end")
    duration = float(duration) if duration is not None else (window[1] - window[0] if window else None)
    flags = set()
    if window is not None and abs((window[1] - window[0]) - duration) > 0.05:
        flags.add(DURATION_MISMATCH)
    return window, duration, flags


def _row(i: int, rec: object, media_root: str | Path | None, result: ReadResult) -> ManifestRow | None:
    if not isinstance(rec, dict) or not str(rec.get("id", "")).strip():
        result.rejected.append(Rejection(f"record{i}", UNPARSABLE, "needs `id` and `conversations`"))
        return None
    rid, meta = str(rec["id"]).strip(), rec.get("meta")
    base = dict(key=make_key(rid), dataset=DATASET, kind="video", media=resolve_video(media_root, rid),
                source_id=rid)
    if not isinstance(meta, dict):
        return ManifestRow(**base, flags=(NO_META,))
    try:
        window, duration, flags = _window(meta)
        events, unpaired = events_from_tokens(meta.get("token") or {}, rec.get("conversations") or [])
    except (TypeError, ValueError, IndexError) as exc:
        result.rejected.append(Rejection(rid, BAD_WINDOW if "split" in str(exc) else UNPARSABLE, str(exc)))
        return None
    kept, more = check_events(events, duration, f"{rid}@record{i}", result)
    flags |= more | ({UNPAIRED} if unpaired else set())
    return ManifestRow(**base, window=window, duration=duration, events=tuple(kept), flags=tuple(sorted(flags)))


def read_vtimellm(annotations: str | Path, durations: str | Path | None = None,
                  media_root: str | Path | None = None) -> ReadResult:
    if durations is not None:
        raise ValueError("vtimellm records carry meta.duration; --durations is not used")
    result, sources, n = ReadResult(), Counter(), 0
    with open(annotations) as f:  # streamed: a record at a time, never the whole file's objects (issue 32)
        for i, rec in enumerate(expect_array(f, annotations, "a list of {id, conversations, meta} records")):
            n += 1
            if isinstance(rec, dict):
                sources[str(rec.get("source", "unknown"))] += 1
            row = _row(i, rec, media_root, result)
            if row is not None:
                result.rows.append(row)
    result.stats = {"records_in": n, "records_by_source": dict(sorted(sources.items()))}
    count_event_stats(result)
    return result
