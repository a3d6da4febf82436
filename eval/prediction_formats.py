"""Other systems' prediction files, read into `vtl-eval score`'s lines (`{"video", "query"|"sentence", "answer"}`).

Accepted, besides our own JSONL (eval.score):
- VTimeLLM's evaluation log (`vtimellm/eval/eval.py`, JSONL): `{"video_id", "task", "answer", "info"}`, the
  grounding query named by `info.sentence` or by `info.sentence_id` (the index of the sentence in the video's
  annotation, resolved against the ground truth);
- a JSON file (TimeChat-style results): `{video: [{"timestamp"|"span": [s, e] | "answer": text,
  "query"|"sentence": text}, ...]}`, or a JSON list of our lines.
Anything else stops with `EXPECTED`, which names these shapes.
"""
from __future__ import annotations

import json
from pathlib import Path

EXPECTED = ("expected JSONL of {\"video\", \"query\" or \"sentence\", \"answer\" (or \"span\"/\"events\")} lines, "
            "VTimeLLM's eval log (JSONL of {\"video_id\", \"task\", \"answer\", \"info\": {\"sentence_id\"}}), "
            "or a JSON object {video: [{\"timestamp\": [s, e], \"query\": text}, ...]} (TimeChat-style)")


def from_vtimellm_log(line: dict) -> dict:
    """A VTimeLLM log line → ours (an unresolved sentence index is kept as `sentence_index`)."""
    out = {"video": line["video_id"], "answer": line.get("answer", "")}
    info = line.get("info") if isinstance(line.get("info"), dict) else {}
    if info.get("sentence"):
        out["sentence"] = info["sentence"]
    elif isinstance(info.get("sentence_id", line.get("query_id")), int):
        out["sentence_index"] = info.get("sentence_id", line.get("query_id"))
    return out


def _from_json_object(data: dict, path) -> list[dict]:
    lines = []
    for video, entries in data.items():
        for entry in entries if isinstance(entries, list) else [entries]:
            if not isinstance(entry, dict):
                raise ValueError(f"{path}: video {video!r}: {EXPECTED}")
            line = {"video": video, **{k: v for k, v in entry.items() if k in ("query", "sentence", "answer")}}
            span = entry.get("timestamp", entry.get("span"))
            if span is not None:
                line["span"] = span
            if "events" in entry:
                line["events"] = entry["events"]
            lines.append(line)
    return lines


def whole_file_json(path: str | Path) -> list[dict] | None:
    """Lines from a file that is one JSON document (object or list), None for JSONL."""
    text = Path(path).read_text(errors="replace")
    head = text.lstrip()[:1]
    if head not in ("{", "["):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None  # JSONL: one object per line
    if isinstance(data, list):
        return [from_vtimellm_log(x) if isinstance(x, dict) and "video_id" in x else x for x in data]
    if isinstance(data, dict) and not ({"video", "video_id"} & set(data)):
        return _from_json_object(data, path)
    return None


def resolve_sentence_indices(preds: list[dict], truth: dict) -> None:
    """VTimeLLM log lines name their query by index into the video's sentences: look the sentence up."""
    for line in preds:
        idx = line.pop("sentence_index", None)
        if idx is None:
            continue
        t = truth.get(str(line["video"]))
        if t is None or not 0 <= idx < len(t.events):
            raise ValueError(f"video {line['video']!r}: no sentence number {idx} in the annotations")
        line["sentence"] = t.events[idx][1]
