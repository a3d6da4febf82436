"""The two evaluation jobs: `run_eval` (checkpoint + evaluation shards → answers → scores) and `run_score`
(predictions file + annotations → scores). Both write `metrics.json` (only the metric keys), a PNG plot and
`run_config.json` (resolved config, producer, counts) into the output folder; `run_eval` also `predictions.jsonl`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from eval.config import EvalConfig, ScoreConfig, resolve_device
from eval.score import Truth, plot, read_predictions, read_truth, score

METRICS = "metrics.json"
PREDICTIONS = "predictions.jsonl"
RUN_CONFIG = "run_config.json"


@dataclass
class EvalItem:
    """One query of an evaluation shard, with what scoring needs."""

    key: str
    video: str
    query_id: str
    query: str
    sentence: str | None
    duration: float
    features: object


def read_eval_shards(shards: Path, task: str, limit: int | None = None) -> tuple[list[EvalItem], dict[str, Truth]]:
    """Queries and ground truth (by sample key) from `build-qa --stage eval` shards; other samples are an error."""
    from pipeline.shards import iter_samples

    items: list[EvalItem] = []
    truth: dict[str, Truth] = {}
    for sample in iter_samples(shards):
        conv = sample.conversation or {}
        if conv.get("stage") != "eval" or conv.get("task") != task:
            raise ValueError(f"{shards}: sample {sample.key} is not a {task} evaluation sample (stage "
                             f"{conv.get('stage')!r}, task {conv.get('task')!r}); build them with "
                             f"`vtl-pipeline build-qa --stage eval --task {task}`")
        duration = float(sample.meta["duration"])
        queries = conv["queries"]
        gt = conv["events"] if task == "dvc" else queries
        truth[sample.key] = Truth(duration, tuple(((float(e["span"][0]), float(e["span"][1])), e["sentence"])
                                                  for e in gt))
        video = sample.meta.get("source_id") or sample.key
        items += [EvalItem(sample.key, video, q["id"], q["query"], q.get("sentence"), duration, sample.features)
                  for q in queries]
        if limit is not None and len(items) >= limit:
            return items[:limit], truth
    if not items:
        raise ValueError(f"{shards}: no evaluation queries")
    return items, truth


def write_outputs(out: Path, task: str, metrics: dict, plot_data: dict, run_config: dict) -> None:
    from pipeline.shards import producer, write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / METRICS, metrics)
    plot(task, plot_data, metrics, out / f"{task}.png")
    write_json_atomic(out / RUN_CONFIG, {**run_config, "producer": producer()})


def run_score(cfg: ScoreConfig) -> dict:
    """Score an existing predictions file; returns the metrics."""
    preds = read_predictions(cfg.predictions, cfg.task)
    truth = read_truth(cfg.annotations, cfg.dataset, cfg.durations)
    metrics, plot_data = score(cfg.task, preds, truth)
    write_outputs(cfg.out, cfg.task, metrics, plot_data, {"command": "score", "config": cfg.to_json()})
    return metrics


def _prediction_line(item: EvalItem, answer: str) -> dict:
    line = {"video": item.video, "key": item.key, "id": item.query_id, "query": item.query, "answer": answer,
            "duration": item.duration}
    if item.sentence is not None:
        line["sentence"] = item.sentence
    return line


def generate_answers(cfg: EvalConfig, items: list[EvalItem], console=None) -> tuple[list[str], dict]:
    """Load the model, build the prompts, generate; returns answers (item order) and timing."""
    from rich.progress import Progress

    from eval.generate import Query, generate
    from train.conversation import generation_prompt
    from train.model import load_for_inference

    device, dtype = resolve_device(cfg.device, cfg.dtype)
    model = load_for_inference(cfg.checkpoint, llm=cfg.llm, device=device, dtype=dtype)
    queries = [Query(generation_prompt([{"from": "human", "value": f"<video>\n{it.query}"}], model.tokenizer,
                                       model.conv_format), it.features) for it in items]
    start = time.perf_counter()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"generating ({cfg.task})", total=len(queries))
        answers = generate(model, queries, cfg.batch_size, cfg.max_new_tokens,
                           progress=lambda n: bar.advance(task, n))
    seconds = time.perf_counter() - start
    return answers, {"device": device, "dtype": str(dtype).removeprefix("torch."), "seconds": round(seconds, 3),
                     "queries_per_s": round(len(items) / seconds, 3) if seconds > 0 else None,
                     "conv_format": model.conv_format}


def run_eval(cfg: EvalConfig, console=None) -> dict:
    """Generate answers for every query of the evaluation shards, write predictions.jsonl, score; returns metrics."""
    items, truth = read_eval_shards(cfg.shards, cfg.task, cfg.limit)
    answers, timing = generate_answers(cfg, items, console)
    lines = [_prediction_line(it, a) for it, a in zip(items, answers)]
    cfg.out.mkdir(parents=True, exist_ok=True)
    tmp = cfg.out / f".{PREDICTIONS}.tmp"
    tmp.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    tmp.replace(cfg.out / PREDICTIONS)
    # Scored by sample key (unique in shards); the file says `video` = source id so `vtl-eval score` can use the
    # original annotation file.
    metrics, plot_data = score(cfg.task, [{**line, "video": line["key"]} for line in lines], truth)
    write_outputs(cfg.out, cfg.task, metrics, plot_data,
                  {"command": cfg.task, "config": cfg.to_json(), "generation": timing})
    return metrics
