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

from infra import storage
from infra.lock import run_lock
from manifests.schema import make_key
from pipeline.contract.checked import BadSample, iter_checked, load_index
from pipeline.contract.conversation import FORMATS, turns_problem
from pipeline.contract.feature_spec import KEY as SPEC_KEY
from pipeline.contract.feature_spec import FeatureSpec, from_index
from pipeline.contract.queries import SHARD_BENCHMARKS
from pipeline.contract.shards import Sample
from pipeline.contract.timing import TIME_FORMATS
from pipeline.qa import durations
from pipeline.qa import rules as qa
from pipeline.qa.budget import TokenBudget, default_format, not_checked
from pipeline.qa.dialogues import RecordError, assign_keys, load_records, record_duration, record_label, render_dialogue
from pipeline.qa.generate import check_options as check_generate_options
from pipeline.qa.generate import settings
from pipeline.qa.llm_dialogues import build_prompt
from pipeline.qa.llm_executors import generate_samples
from pipeline.qa.output import RUN_LOCK, QaOutput, QaStats, out_location, print_summary, progress_iter

STAGES = ("1", "2", "3")
DURATION_TOLERANCE = 0.01
"""Relative difference between a dialogue's meta.duration and the features' duration above which it is noted."""


@dataclass(frozen=True)
class BuildQaConfig:
    """Options of `vtl-pipeline build-qa`, one field per CLI option."""

    features: str | Path
    """Feature-shard folder (index.json + shards) written by extract."""
    out: str | Path
    """Output folder (a path or an s3:// / gs:// URL); must be empty unless `overwrite`."""
    stage: str | None = None
    """Training shards for stage 1 (captions, `plain`), 2 (templated boundary QA) or 3 (dialogues from
    --dialogues). Exactly one of `stage` and `benchmark` is given."""
    benchmark: str | None = None
    """Evaluation shards instead: grounding or dvc queries with their ground truth, or qvhighlights (a moment-retrieval
    and a highlight-detection query per QVHighlights query)."""
    seed: int = 0
    """Stage 2: the random stream of a sample is seeded with "seed:key". Stage 3 --generate: the sampling seed."""
    dense_ratio: float = 0.2
    """Stage 2: share of samples that get one dense-captioning turn instead of multi-turn QA."""
    grounding_ratio: float = 0.5
    """Stage 2 multi-turn: probability that an event gets a grounding question (else event captioning)."""
    overlap: str = "keep"
    """Stage 2: overlapping events are kept and counted (`keep`) or dropped (`drop`)."""
    dialogues: Path | None = None
    """Stage 3: a VTimeLLM stage3.json-format file."""
    max_tokens: int = 2048
    """Token budget per sample (text + feature positions)."""
    tokenizer: Path | None = None
    """A local Hugging Face tokenizer folder; without it the token-budget check is skipped."""
    conv_format: str | None = None
    """Conversation format the token budget counts with, as the trainer encodes it (default: plain for stage 1,
    v1 otherwise)."""
    samples_per_shard: int = 1000
    """Samples per shard."""
    generate: bool = False
    """Stage 3: write the dialogues with a text LLM from each sample's events instead of reading --dialogues
    (pipeline.qa.generate; docs/build-qa.md)."""
    llm: Path | None = None
    """--generate: a local Hugging Face causal-LM folder (or a vLLM model with llm_engine vllm)."""
    dialogues_per_video: int = 2
    """--generate: dialogues per video."""
    llm_engine: str = "transformers"
    """--generate: transformers (default) or vllm (where installed)."""
    executor: str = "local"
    """--generate: the LLM in this process (local) or on Ray actors (ray)."""
    llm_actors: int = 1
    """--generate --executor ray: LLM actors (one GPU each when the cluster has GPUs)."""
    llm_batch_size: int = 8
    """--generate: prompts per generate call."""
    max_new_tokens: int = 384
    """--generate: longest generation (tokens)."""
    temperature: float = 0.7
    """--generate: sampling temperature; 0 = greedy."""
    top_p: float = 0.9
    """--generate: nucleus sampling."""
    overwrite: bool = False
    """Replace a previous run's files in `out`."""
    progress: bool = True
    """Show a progress bar."""
    on_duration_mismatch: str = "skip"
    """Samples whose meta.json flags an annotated duration the media does not have (`duration_mismatch`): skip
    (error records), flag (kept and counted) or refuse (stop before writing); pipeline.qa.durations."""
    time_format: str = "relative"
    """How times are written in the text: relative (VTimeLLM: position 0..N-1 of N, "00"-"99" for 100 frames),
    seconds ("12.5s") or frame (index of the sampled frame); recorded in the output's feature_spec."""
    time_precision: int = 1
    """--time-format seconds: decimals written."""
    timestamp_shift: int = 0
    """Test-only misalignment switch: every rendered timestamp of stages 2-3 moves by this many positions (clamped to
    00..99). The end-to-end test uses it to show that a 10-position shift stops the model from learning grounding."""

    def __post_init__(self) -> None:
        if self.stage == "eval":
            raise ValueError("--stage eval is now --benchmark grounding|dvc (a stage is a training stage)")
        if (self.stage is None) == (self.benchmark is None):
            raise ValueError("give --stage 1|2|3 (training shards) or --benchmark grounding|dvc (evaluation shards)")
        if self.stage is not None and self.stage not in STAGES:
            raise ValueError(f"--stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.benchmark is not None and self.benchmark not in SHARD_BENCHMARKS:
            raise ValueError(f"--benchmark must be one of {', '.join(SHARD_BENCHMARKS)}, got {self.benchmark!r}")
        if (self.stage == "3") != (self.dialogues is not None or self.generate):
            raise ValueError("--dialogues (or --generate) is required for --stage 3 and only used there")
        check_generate_options(self)
        for name in ("dense_ratio", "grounding_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be within [0, 1], got {getattr(self, name)}")
        if self.on_duration_mismatch not in durations.RULES:
            raise ValueError(f"--on-duration-mismatch must be one of {', '.join(durations.RULES)}, "
                             f"got {self.on_duration_mismatch!r}")
        if self.overlap not in qa.OVERLAP_RULES:
            raise ValueError(f"--overlap must be one of {qa.OVERLAP_RULES}, got {self.overlap!r}")
        if self.time_format not in TIME_FORMATS:
            raise ValueError(f"--time-format must be one of {', '.join(TIME_FORMATS)}, got {self.time_format!r}")
        if not 0 <= self.time_precision <= 6:
            raise ValueError(f"--time-precision must be in 0..6, got {self.time_precision}")
        if self.generate and self.time_format != "relative":
            raise ValueError("--generate writes relative times only for now; build its dialogues without "
                             "--time-format")
        if self.max_tokens < 1 or self.samples_per_shard < 1:
            raise ValueError("--max-tokens and --samples-per-shard must be ≥ 1")
        if self.conv_format is not None and self.conv_format not in FORMATS:
            raise ValueError(f"--conv-format must be one of {FORMATS}, got {self.conv_format!r}")
        if storage.resolve(self.out) == storage.resolve(self.features):
            raise ValueError("--out must differ from --features")


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
