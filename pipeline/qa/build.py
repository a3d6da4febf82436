"""`vtl-pipeline build-qa`: feature shards → training shards (`--stage 1|2|3`) or evaluation shards
(`--benchmark grounding|dvc`).

Reads a feature-shard folder (pipeline.contract.shards), keeps each sample's features and meta, adds `conversation.json`
built by pipeline.qa.rules, and writes a new folder with index.json (+ QA statistics), errors.jsonl and run_config.json.
For every run: input samples (stage 3: dialogues and feature samples) = written samples + error records.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from infra.lock import run_lock
from manifests.schema import make_key
from pipeline.contract.checked import BadSample, iter_checked, load_index
from pipeline.contract.conversation import turns_problem
from pipeline.contract.feature_spec import KEY as SPEC_KEY
from pipeline.contract.feature_spec import FeatureSpec, from_index
from pipeline.contract.shards import Sample
from pipeline.qa import durations
from pipeline.qa import rules as qa
from pipeline.qa.budget import TokenBudget, default_format, not_checked
from pipeline.qa.build_config import BuildQaConfig
from pipeline.qa.dialogues import RecordError, assign_keys, load_records, record_duration, record_label, render_dialogue
from pipeline.qa.generate import settings
from pipeline.qa.llm_dialogues import build_prompt
from pipeline.qa.llm_executors import generate_samples
from pipeline.qa.output import RUN_LOCK, QaOutput, QaStats, out_location, print_summary, progress_iter

DURATION_TOLERANCE = 0.01
"""Relative difference between a dialogue's meta.duration and the features' duration above which it is noted."""


@dataclass
class BuildQaResult:
    out: Path
    index: Path
    samples: int
    errors: int


def _duration(meta: dict) -> float | None:
    d = meta.get("duration")
    return float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d) and d > 0 \
        else None


Made = Iterator[tuple[str, dict | None, str, str]]
"""What a sample maker (a stage, or the evaluation rule) yields per input sample: (key, conversation or None, error
reason, detail)."""


def _stage1(sample: Sample, cfg: BuildQaConfig, stats: QaStats, spec: FeatureSpec) -> Made:
    conv = qa.stage1_conversation(sample.meta.get("caption"))
    yield sample.key, conv, "no_caption", "sample has no caption"


def _stage2(sample: Sample, cfg: BuildQaConfig, stats: QaStats, spec: FeatureSpec) -> Made:
    duration = _duration(sample.meta)
    if duration is None:
        yield sample.key, None, "bad_duration", f"duration {sample.meta.get('duration')!r}"
        return
    clean = qa.clean_events(sample.meta.get("events") or [], duration, cfg.overlap)
    stats.events_kept += len(clean.kept)
    stats.events_dropped.update(clean.dropped)
    stats.notes.update({f"events_{k}": v for k, v in clean.notes.items()})
    if not clean.kept:
        detail = ", ".join(f"{k}: {v}" for k, v in clean.dropped.items()) or "no events"
        yield sample.key, None, "no_usable_events", detail
        return
    fmt = spec.sample_time(sample.meta, int(sample.features.shape[0]))
    yield sample.key, qa.stage2_conversation(clean.kept, duration, cfg.seed, sample.key, cfg.dense_ratio,
                                             cfg.grounding_ratio, fmt), "", ""


def _eval(sample: Sample, cfg: BuildQaConfig, stats: QaStats, spec: FeatureSpec) -> Made:
    fmt = spec.sample_time(sample.meta, int(sample.features.shape[0]))
    conv, dropped = qa.eval_conversation(cfg.benchmark, sample.key, sample.meta.get("events") or [], fmt)
    stats.events_dropped.update(dropped)
    if conv is not None:
        stats.events_kept += len(conv.get("events") or conv["queries"])
    yield sample.key, conv, "no_events", "no event with a sentence and numeric times"


class DialogueJoin:
    """Stage 3: dialogues grouped by the key of their video (make_key(record id)), consumed as feature samples
    arrive. A feature sample matches by its key, else by make_key(its source_id) (the manifest reader of stage3.json
    suffixes the second row of a video, `{key}_2`). The first feature sample of a video takes all its dialogues; a
    later one of the same video is an error `duplicate_video`."""

    def __init__(self, records: list, out: QaOutput):
        keyed = assign_keys(records)
        out.stats.inputs["dialogues"] = len(keyed)
        self.by_video: dict[str, list] = {}
        self.done: set[str] = set()
        for kr in keyed:
            if kr.key is None:
                reason = "bad_record" if kr.video_key is None else "duplicate_key"
                out.error(record_label(kr), reason, "record has no usable id or repeats another's key")
            else:
                self.by_video.setdefault(kr.video_key, []).append(kr)

    def __call__(self, sample: Sample, cfg: BuildQaConfig, stats: QaStats, spec: FeatureSpec) -> Made:
        source = sample.meta.get("source_id")
        video = sample.key if sample.key in self.by_video or not source else make_key(str(source))
        records = self.by_video.pop(video, None)
        if not records:
            if video in self.done or sample.key in self.done:
                yield sample.key, None, "duplicate_video", f"dialogues of {video!r} already joined to another sample"
            else:
                yield sample.key, None, "no_dialogue", "no dialogue in --dialogues has this key or source_id"
            return
        self.done.add(video)
        duration = _duration(sample.meta)
        for kr in records:
            given = record_duration(kr.record)
            if duration and given and abs(given - duration) > DURATION_TOLERANCE * duration:
                stats.notes["duration_mismatch"] += 1
            try:
                turns, note = render_dialogue(kr.record, duration,
                                              spec.sample_time(sample.meta, int(sample.features.shape[0])))
            except RecordError as exc:
                yield kr.key, None, exc.reason, exc.detail
                continue
            if note:
                stats.notes[note] += 1
            yield kr.key, qa.dialogue_conversation(turns, "build-qa"), "", ""

    def leftovers(self, out: QaOutput) -> None:
        for records in self.by_video.values():
            for kr in records:
                out.error(kr.key, "no_features", f"no feature sample with key {kr.video_key!r}")


def _made(samples, make, cfg: BuildQaConfig, stats: QaStats, spec: FeatureSpec):
    for sample in samples:
        stats.inputs["feature_samples"] += 1
        for key, conv, reason, detail in make(sample, cfg, stats, spec):
            yield sample, key, conv, reason, detail


def _make_budget(cfg: BuildQaConfig) -> TokenBudget | None:
    if (cfg.tokenizer is None and not cfg.generate) or cfg.benchmark is not None:
        return None
    return TokenBudget(Path(cfg.tokenizer or cfg.llm), cfg.max_tokens, cfg.conv_format or default_format(cfg.stage),
                       "--tokenizer" if cfg.tokenizer else "--llm")


def run_build_qa(cfg: BuildQaConfig) -> BuildQaResult:
    """Build the training (or evaluation) shards of `cfg.features` into `cfg.out`."""
    index_in = load_index(cfg.features)
    records = load_records(cfg.dialogues) if cfg.dialogues else None  # a bad file stops before any output
    budget = _make_budget(cfg)
    if cfg.on_duration_mismatch == "refuse":
        durations.refuse_if_flagged(cfg.features, index_in)  # before any output exists
    with run_lock(str(out_location(cfg.out)), RUN_LOCK, "build-qa"):  # one writer per folder (infra.lock)
        return _build(cfg, index_in, records, budget)


def _build(cfg: BuildQaConfig, index_in: dict, records: list | None, budget: TokenBudget | None) -> BuildQaResult:
    stats = QaStats(stage=int(cfg.stage) if cfg.stage else None, benchmark=cfg.benchmark, source="build-qa",
                    seed=cfg.seed if cfg.stage == "2" or cfg.generate else None)
    prefix = f"eval-{cfg.benchmark}" if cfg.benchmark else f"stage{cfg.stage}"
    out = QaOutput(out_location(cfg.out), prefix, "build-qa", stats, cfg.samples_per_shard, cfg.overwrite)
    try:
        _fill(cfg, out, index_in, records, budget)
    except BaseException:
        out.abort()  # no half-written shard left behind (a read-only or full disk, a damaged input shard)
        raise
    stats.token_budget = budget.report() if budget else not_checked(
        "eval queries are not checked" if cfg.benchmark else "no --tokenizer given", cfg.max_tokens)
    spec = output_spec(cfg, index_in)
    run_config = {"command": "build-qa", "config": asdict(cfg),
                  "input": {"features": str(cfg.features), "encoder": index_in.get("encoder"),
                            "shards": [s["sha256"] for s in index_in.get("shards", [])]}}
    if cfg.generate:
        run_config["generation"] = {**settings(cfg), "prompt_without_events": build_prompt([])}
    index = out.finish(run_config, index_in.get("encoder"), index_in.get("manifest_hash"),
                       extra={SPEC_KEY: spec.to_json()})
    return BuildQaResult(out_location(cfg.out), index, stats.samples, out.error_count)


def _fill(cfg: BuildQaConfig, out: QaOutput, index_in: dict, records: list | None,
          budget: TokenBudget | None) -> None:
    """Every input sample → a written sample or an error record (the input shards held to their index)."""
    stats = out.stats
    join = DialogueJoin(records, out) if records is not None else None
    make = _eval if cfg.benchmark else {"1": _stage1, "2": _stage2, "3": join}[cfg.stage]
    total = index_in.get("totals", {}).get("samples")
    label = f"build-qa stage {cfg.stage}" if cfg.stage else f"build-qa {cfg.benchmark}"
    checked = progress_iter(iter_checked(cfg.features, index_in), total, label, cfg.progress)
    samples = durations.apply(_decodable(checked, out), cfg.on_duration_mismatch, out)
    made = (generate_samples(samples, cfg, stats, budget) if cfg.generate
            else _made(samples, make, cfg, stats, output_spec(cfg, index_in)))
    for sample, key, conv, reason, detail in made:
        if conv is None:
            out.error(key, reason, detail, sample.meta.get("source_id"))
            continue
        if cfg.stage and (problem := turns_problem(conv.get("turns"))):  # e.g. a caption holding `<video>`
            out.error(key, "bad_turns", problem, sample.meta.get("source_id"))
            continue
        if cfg.timestamp_shift and cfg.stage in ("2", "3"):
            conv = qa.shift_timestamps(conv, cfg.timestamp_shift)
        if budget is not None:
            budget.check(key, conv["turns"], int(sample.features.shape[0]))
        meta = sample.meta if key == sample.key else {**sample.meta, "key": key, "source_key": sample.key}
        out.write(key, sample.features, meta, conv)
    if join is not None:
        join.leftovers(out)


def output_spec(cfg: BuildQaConfig, index_in: dict) -> FeatureSpec:
    """The input's feature spec (or the one its older index.json implies) with this build's time format."""
    return from_index(index_in).with_time(cfg.time_format, cfg.time_precision)


def _decodable(checked, out: QaOutput):
    """The samples that decode into a features array and a meta object; the others are counted error records."""
    for sample in checked:
        if isinstance(sample, BadSample):
            out.stats.inputs["feature_samples"] += 1
            out.error(sample.key, sample.reason, sample.detail)
        elif not isinstance(sample.meta, dict):
            out.stats.inputs["feature_samples"] += 1
            out.error(sample.key, "bad_meta", "meta.json is not an object")
        else:
            yield sample


def summarize(result: BuildQaResult) -> None:
    print_summary("build-qa", result.index)
