"""The two evaluation jobs: `run_eval` (checkpoint + evaluation shards → answers → scores) and `run_score`
(predictions file + annotations → scores). Both write `metrics.json` (only the metric keys), PNG plots and
`run_config.json` (resolved config, producer, counts) into the output folder; `run_eval` also `predictions.jsonl`.
An object-store output folder (`--out s3://…`) is checked writable before any work, the job writes into a local
spool folder, and its files are uploaded at the end, each as one finished object, `run_config.json` last.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from eval.config import EvalConfig, ScoreConfig, resolve_device
from eval.prediction_formats import resolve_sentence_indices
from eval.score import Truth, iter_predictions, read_truth, score
from infra.storage import fsync_file
from pipeline.contract.conversation import video_turn
from pipeline.contract.provenance import RUN_CONFIG
from pipeline.contract.record import record_benchmark, record_stage

METRICS = "metrics.json"
PREDICTIONS = "predictions.jsonl"


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


CHUNK_QUERIES = 1024
"""Queries held in memory at once (with their videos' features); answers are written out chunk by chunk."""


def _check_sample(sample, shards: Path, benchmark: str) -> dict:
    conv = sample.conversation if isinstance(sample.conversation, dict) else {}
    if record_benchmark(conv) != benchmark:
        raise ValueError(f"{shards}: sample {sample.key} is not a {benchmark} evaluation sample (benchmark "
                         f"{record_benchmark(conv)!r}, stage {record_stage(conv)!r}); build them with "
                         f"`vtl-pipeline build-qa --benchmark {benchmark}`")
    return conv


def _sample_items(sample, conv: dict, benchmark: str, room: int | None, spec) -> tuple[list[EvalItem], Truth]:
    duration = float(sample.meta["duration"])
    if not 0 < duration < float("inf"):
        raise ValueError(f"duration {duration}")
    queries = conv["queries"][:room] if room is not None else conv["queries"]
    gt = conv["events"] if benchmark == "dvc" else conv["queries"]
    truth = Truth(duration, tuple(((float(e["span"][0]), float(e["span"][1])), e["sentence"]) for e in gt),
                  spec.sample_time(sample.meta, int(sample.features.shape[0])))
    video = sample.meta.get("source_id") or sample.key
    return [EvalItem(sample.key, video, q["id"], q["query"], q.get("sentence"), duration, sample.features)
            for q in queries], truth


def check_eval_shards(shards: Path) -> None:
    """Before the model loads: the index parses and every shard is there at the size it records."""
    from pipeline.contract.checked import check_files, load_index

    check_files(shards, load_index(shards))


def iter_eval_chunks(shards: Path, benchmark: str, limit: int | None = None, chunk: int = CHUNK_QUERIES
                     ) -> Iterator[tuple[list[EvalItem], dict[str, Truth]]]:
    """Queries (about `chunk` at a time, whole samples) and their ground truth by sample key, streamed from
    `build-qa --benchmark` shards, so memory does not grow with the evaluation set. Other samples are an error."""
    from pipeline.contract.checked import iter_good
    from pipeline.contract.feature_spec import from_index
    from pipeline.contract.shards import read_index

    spec = from_index(read_index(shards))  # the time format answers are read in is the one build-qa wrote
    items: list[EvalItem] = []
    truth: dict[str, Truth] = {}
    total = 0
    for sample in iter_good(shards):  # held to index.json: a cut or zero-filled shard stops the run
        conv = _check_sample(sample, shards, benchmark)
        try:
            new, sample_truth = _sample_items(sample, conv, benchmark, None if limit is None else limit - total,
                                              spec)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"{shards}: sample {sample.key} is not a valid {benchmark} evaluation sample "
                             f"({type(exc).__name__}: {exc})") from None
        truth[sample.key] = sample_truth
        items += new
        total += len(new)
        if len(items) >= chunk or (limit is not None and total >= limit):
            yield items, truth
            items, truth = [], {}
        if limit is not None and total >= limit:
            return
    if items:
        yield items, truth
    elif total == 0:
        raise ValueError(f"{shards}: no evaluation queries")


def read_eval_shards(shards: Path, benchmark: str, limit: int | None = None) -> tuple[list[EvalItem], dict[str, Truth]]:
    """All queries and ground truth at once (small sets, tests)."""
    items: list[EvalItem] = []
    truth: dict[str, Truth] = {}
    for chunk_items, chunk_truth in iter_eval_chunks(shards, benchmark, limit):
        items += chunk_items
        truth.update(chunk_truth)
    return items, truth


def write_outputs(out: Path, benchmark: str, metrics: dict, plot_data: dict, run_config: dict,
                  cfg: EvalConfig | ScoreConfig) -> None:
    from eval.figures import write_figures
    from infra.storage import write_json_atomic
    from pipeline.contract.provenance import producer

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / METRICS, metrics)
    if benchmark in ("grounding", "dvc"):  # QVHighlights: the figures only (no plots yet)
        write_figures(out, benchmark, plot_data, metrics, cfg.timeline_queries, cfg.timeline_videos)
    write_json_atomic(out / RUN_CONFIG, {**run_config, "producer": producer()})


def _local_out(job, cfg: EvalConfig | ScoreConfig) -> dict:
    """`job(cfg)`, with an object-store `cfg.out` replaced by a spool folder whose files are uploaded afterwards."""
    from infra import storage
    from infra.preflight import preflight

    if not storage.is_remote(cfg.out):
        return job(cfg)
    preflight(cfg.out, write=True, what="--out")  # credentials, bucket, a denied write: said before the model loads
    local = Path(tempfile.mkdtemp(prefix="vtl-eval-", dir=storage.spool_dir()))
    try:
        metrics = job(replace(cfg, out=local))
        run_config = json.loads((local / RUN_CONFIG).read_text())
        run_config["config"]["out"] = cfg.out
        for path in sorted(local.iterdir()):
            if path.is_file() and path.name != RUN_CONFIG:
                storage.upload(path, storage.join(cfg.out, path.name))
        storage.write_json_atomic(storage.join(cfg.out, RUN_CONFIG), run_config)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    return metrics


def run_score(cfg: ScoreConfig) -> dict:
    """Score an existing predictions file; returns the metrics."""
    return _local_out(_run_score, cfg)


def _run_score(cfg: ScoreConfig) -> dict:
    if cfg.benchmark == "qvhighlights":
        metrics, plot_data = _score_qvhighlights(cfg), {}
    else:
        truth = read_truth(cfg.annotations, cfg.dataset, cfg.durations)
        preds = _resolved(iter_predictions(cfg.predictions, cfg.benchmark), truth)
        metrics, plot_data = score(cfg.benchmark, preds, truth, keep_records=cfg.timeline_queries)
    write_outputs(cfg.out, cfg.benchmark, metrics, plot_data, {"command": "score", "config": cfg.to_json()}, cfg)
    return metrics


def _resolved(preds: Iterator[dict], truth: dict[str, Truth]) -> Iterator[dict]:
    """The predictions as they come, VTimeLLM log lines' sentence numbers looked up (one line at a time)."""
    for line in preds:
        resolve_sentence_indices([line], truth)
        yield line


def _score_qvhighlights(cfg: ScoreConfig) -> dict:
    from eval.qvhighlights import read_submission, score_submission
    from eval.qvhighlights import read_truth as read_qvh_truth

    if cfg.durations is not None or cfg.dataset not in (None, "qvhighlights"):
        raise ValueError("qvhighlights reads its own JSONL annotations: --dataset and --durations are not used")
    return score_submission(read_submission(cfg.predictions), read_qvh_truth(cfg.annotations))


def _prediction_line(item: EvalItem, answer: str) -> dict:
    line = {"video": item.video, "key": item.key, "id": item.query_id, "query": item.query, "answer": answer,
            "duration": item.duration}
    if item.sentence is not None:
        line["sentence"] = item.sentence
    return line


def query_turn(benchmark: str, query: str) -> dict:
    """The human turn VTimeLLM's eval sends: "<video>\\n " + query for dense captioning (a space, so its first token
    is "▁Could"), "<video>\\n" + query for grounding (no space)."""
    return video_turn(" " + query if benchmark == "dvc" else query)


def _answer(model, cfg: EvalConfig, items: list[EvalItem], on_batch) -> list[str]:
    from eval.generate import Query, generate
    from pipeline.contract.conversation import generation_prompt

    queries = [Query(generation_prompt([query_turn(cfg.benchmark, it.query)], model.tokenizer, model.conv_format),
                     it.features) for it in items]
    return generate(model, queries, cfg.batch_size, cfg.max_new_tokens, progress=on_batch)


def load_eval_model(cfg: EvalConfig, device: str, dtype):
    """The checkpoint's model for inference, after checking the shards and that their encoder is the checkpoint's."""
    from pipeline.contract.shards import read_index
    from train.llm_source import check_checkpoint_llm

    check_checkpoint_llm(cfg.checkpoint, cfg.llm)  # before torch: a hub no one can reach is one line in seconds
    from train.checkpoint import check_spec, load_for_inference, read_checkpoint

    check_eval_shards(cfg.shards)
    check_spec(read_checkpoint(cfg.checkpoint), read_index(cfg.shards), f"the evaluation shards in {cfg.shards}")
    model = load_for_inference(cfg.checkpoint, llm=cfg.llm, device=device, dtype=dtype)
    model.conv_format = cfg.conv_format or model.conv_format
    return model


def generate_predictions(cfg: EvalConfig, console=None) -> tuple[list[dict], dict[str, Truth], dict]:
    """Load the model, answer every query chunk by chunk (predictions.jsonl written as it goes, renamed at the end);
    returns the prediction lines, the ground truth and timing."""
    device, dtype = resolve_device(cfg.device, cfg.dtype)
    model = load_eval_model(cfg, device, dtype)
    cfg.out.mkdir(parents=True, exist_ok=True)
    tmp = cfg.out / f".{PREDICTIONS}.tmp"
    lines: list[dict] = []
    truth: dict[str, Truth] = {}
    start = time.perf_counter()
    try:
        _generate_into(cfg, model, tmp, lines, truth, console)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a damaged shard or a full disk leaves no partial predictions behind
        raise
    tmp.replace(cfg.out / PREDICTIONS)
    seconds = time.perf_counter() - start
    return lines, truth, {"device": device, "dtype": str(dtype).removeprefix("torch."), "seconds": round(seconds, 3),
                          "queries_per_s": round(len(lines) / seconds, 3) if seconds > 0 else None,
                          "conv_format": model.conv_format}


def _generate_into(cfg: EvalConfig, model, tmp: Path, lines: list, truth: dict, console) -> None:
    from eval.progress import QueryBar

    with QueryBar(console, f"generating ({cfg.benchmark})", cfg.shards, cfg.limit) as bar, open(tmp, "w") as f:
        for items, chunk_truth in iter_eval_chunks(cfg.shards, cfg.benchmark, cfg.limit):
            bar.chunk(len(items), len(chunk_truth))
            answers = _answer(model, cfg, items, bar.advance)
            chunk_lines = [_prediction_line(it, a) for it, a in zip(items, answers)]
            f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in chunk_lines)
            f.flush()
            lines += chunk_lines
            truth.update(chunk_truth)
        fsync_file(f)


def run_eval(cfg: EvalConfig, console=None) -> dict:
    """Generate answers for every query of the evaluation shards, write predictions.jsonl, score; returns metrics."""
    return _local_out(lambda c: _run_eval(c, console), cfg)


def _run_eval(cfg: EvalConfig, console=None) -> dict:
    lines, truth, timing = generate_predictions(cfg, console)
    return finish_eval(cfg, lines, truth, timing)


def finish_eval(cfg: EvalConfig, lines: list[dict], truth: dict[str, Truth], timing: dict) -> dict:
    """Score the prediction lines of a model run and write metrics.json, the plots and run_config.json."""
    if cfg.benchmark == "qvhighlights":  # its own submission file and scorer
        from eval.qvh_run import finish_qvhighlights

        return finish_qvhighlights(cfg, lines, timing)
    # Scored by sample key (unique in shards); the file says `video` = source id so `vtl-eval score` can use the
    # original annotation file.
    metrics, plot_data = score(cfg.benchmark, [{**line, "video": line["key"]} for line in lines], truth)
    write_outputs(cfg.out, cfg.benchmark, metrics, plot_data,
                  {"command": cfg.benchmark, "config": cfg.to_json(), "generation": timing}, cfg)
    return metrics
