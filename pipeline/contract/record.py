"""The `conversation.json` record of a shard sample: its two shapes, their constructors, the readers of its kind, and
the check `inspect --verify` applies. build-qa and import-vtimellm write it, the trainer, `vtl-eval` and `inspect`
read it; the turns follow `pipeline.contract.conversation`.

- Training record: `{"turns", "stage": 1|2|3, "form", "templates", "seed", "source"}`; `form` names what the turns
  are (`caption`, `multi_turn`, `dense_captioning`, `dialogue`).
- Evaluation record: `{"benchmark": "grounding"|"dvc", "turns": [], "queries": [...]}` (+ `"events"` for dvc):
  queries with their ground truth, no turns.

Shards written before the glossary rename carry `"task"` for `form` and `"stage": "eval"` + `"task"` for
`benchmark`; the readers here accept both, so those shards still verify and evaluate.
"""
from __future__ import annotations

from pipeline.contract.conversation import VIDEO_PLACEHOLDER, turns_problem

FORMS = ("caption", "multi_turn", "dense_captioning", "dialogue")


def training_record(turns: list[dict], stage: int, form: str, templates: list[str] | None = None,
                    seed: int | None = None, source: str = "build-qa") -> dict:
    """The record of a training sample."""
    return {"turns": turns, "stage": stage, "form": form, "templates": list(templates or []), "seed": seed,
            "source": source}


def eval_record(benchmark: str, queries: list[dict], events: list[dict] | None = None) -> dict:
    """The record of an evaluation sample: queries (id, query, sentence, span) and, for dvc, the events."""
    record = {"benchmark": benchmark, "turns": [], "queries": queries}
    if events is not None:
        record["events"] = events
    return record


def record_benchmark(record: dict) -> str | None:
    """The benchmark of an evaluation record, None for a training record."""
    if "benchmark" in record:
        return record["benchmark"]
    return record.get("task") if record.get("stage") == "eval" else None


def record_form(record: dict) -> str | None:
    """What a training record's turns are (`caption`, `multi_turn`, ...); an evaluation record's benchmark."""
    return record_benchmark(record) or record.get("form", record.get("task"))


def record_stage(record: dict) -> int | None:
    """The training stage a record was built for, None for an evaluation record."""
    return None if record_benchmark(record) is not None else record.get("stage")


def record_problem(record) -> str | None:
    """What is wrong with a conversation.json (the cross-part contract), or None."""
    if not isinstance(record, dict) or not isinstance(record.get("turns"), list):
        return "not an object with a 'turns' list"
    if record_benchmark(record) is not None:
        return None if isinstance(record.get("queries"), list) else "eval sample without a 'queries' list"
    turns = record["turns"]
    if problem := turns_problem(turns):
        return problem
    if not turns[0]["value"].startswith(VIDEO_PLACEHOLDER + "\n"):
        return f"first turn does not start with '{VIDEO_PLACEHOLDER}\\n'"
    return None
