"""`vtl-pipeline import-vtimellm`: VTimeLLM's released JSON + its folder of `{id}.npy` features → training shards.

Renders the text as VTimeLLM's loader does at training time (reference §2.4): every (placeholder, seconds) of
meta.token, quantised against meta.duration, replaced in every turn. Stage-1 records (LLaVA's 558K file) become
the `plain` format: human `<video>\\n`, answer = the caption (reference §4.3). Where VTimeLLM silently trained on a
random other sample (missing or unreadable `.npy`), we write an error record instead.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from infra import storage
from infra.preflight import preflight
from manifests.jsonstream import iter_array
from manifests.schema import file_sha256
from pipeline.contract.conversation import FORMATS
from pipeline.contract.npy import load_npy_bytes
from pipeline.contract.shards import FEATURE_DIM, FEATURE_DTYPE
from pipeline.qa import rules as qa
from pipeline.qa.budget import TokenBudget, default_format, not_checked
from pipeline.qa.dialogues import (
    KeyedRecord,
    RecordError,
    _video_key,
    check_turns,
    record_duration,
    record_label,
    render_dialogue,
)
from pipeline.qa.import_keys import KeyCounts, iter_keyed_bounded
from pipeline.qa.output import QaOutput, QaStats, out_location, print_summary, progress_iter

ENCODER = "vtimellm-release:clip-vit-l-14"
"""Encoder id recorded for imported features: the released features (CLIP ViT-L/14, projected CLS, fp16)."""


@dataclass(frozen=True)
class ImportConfig:
    """Options of `vtl-pipeline import-vtimellm`, one field per CLI option."""

    json: str | Path
    """VTimeLLM stage2.json / stage3.json, or LLaVA's blip_laion_cc_sbu_558k.json for stage 1."""
    features_dir: str | Path
    """Folder of `{id}.npy` feature files."""
    out: str | Path
    """Output folder (a path or an s3:// URL); must be empty unless `overwrite`."""
    stage: int | None = None
    """1, 2 or 3; None infers it (records with `image` → 1; `<s0>` in meta.token → 2; otherwise 3)."""
    max_tokens: int = 2048
    """Token budget per sample (text + feature positions)."""
    tokenizer: Path | None = None
    """A local Hugging Face tokenizer folder; without it the token-budget check is skipped."""
    conv_format: str | None = None
    """Conversation format the token budget counts with (default: plain for stage 1, v1 otherwise)."""
    samples_per_shard: int = 1000
    """Samples per shard."""
    overwrite: bool = False
    """Replace a previous run's files in `out`."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.stage is not None and self.stage not in (1, 2, 3):
            raise ValueError(f"--stage must be 1, 2 or 3, got {self.stage}")
        if self.max_tokens < 1 or self.samples_per_shard < 1:
            raise ValueError("--max-tokens and --samples-per-shard must be ≥ 1")
        if self.conv_format is not None and self.conv_format not in FORMATS:
            raise ValueError(f"--conv-format must be one of {FORMATS}, got {self.conv_format!r}")
        if storage.is_remote(self.features_dir):
            preflight(self.features_dir, what="--features-dir")
        elif not Path(self.features_dir).is_dir():
            raise ValueError(f"--features-dir {self.features_dir} is not a folder")


@dataclass
class ImportResult:
    out: Path
    index: Path
    samples: int
    errors: int
    stage: int


def infer_stage(records: list) -> int:
    """Stage of a released file: LLaVA records carry `image`; stage-2 placeholders are 0-based (`<s0>`)."""
    for r in records[:1000]:
        if isinstance(r, dict) and "image" in r:
            return 1
        token = (r.get("meta") or {}).get("token") if isinstance(r, dict) else None
        if isinstance(token, dict) and "<s0>" in token:
            return 2
    return 3


def load_features(path: Path | str, image: bool) -> np.ndarray:
    """One `.npy` (a path or a URL): (N, D) for videos; (D,) or (1, D) for images, D = FEATURE_DIM. Raises
    RecordError: missing, unreadable (pickled or a header lying about its size included), bad shape, width or dtype,
    NaN/Inf."""
    name = storage.basename(path)
    try:
        data = storage.read_bytes(path)
    except (FileNotFoundError, IsADirectoryError):
        raise RecordError("missing_features", f"{name} not found") from None
    try:
        feats = load_npy_bytes(data, name)  # the header's shape × itemsize is checked against the size first
    except (OSError, ValueError, EOFError) as exc:
        raise RecordError("unreadable_features", f"{name}: {exc}") from exc
    if image and feats.ndim == 1:
        feats = feats[None, :]
    if feats.ndim != 2 or feats.shape[0] < 1 or feats.shape[1] < 1 or (image and feats.shape[0] != 1):
        raise RecordError("bad_shape", f"{name}: shape {feats.shape}")
    if feats.shape[1] != FEATURE_DIM:  # e.g. CLIP ViT-B's 512: the projector takes 768
        raise RecordError("bad_dim", f"{name}: {feats.shape[1]} features per row, expected {FEATURE_DIM}")
    if not np.issubdtype(feats.dtype, np.floating):
        raise RecordError("bad_dtype", f"{name}: dtype {feats.dtype}")
    if not np.isfinite(feats.astype(FEATURE_DTYPE)).all():
        raise RecordError("non_finite_features", f"{name}: NaN or Inf (after the float16 cast)")
    return feats


def stage1_turns(record: dict) -> list[dict]:
    """LLaVA record → plain turns: VTimeLLM replaces the human turn by `<video>\\n` (LLaVA's `<image>`)."""
    turns = check_turns(record.get("conversations"))
    if len(turns) != 2:
        raise RecordError("bad_conversation", f"stage-1 record has {len(turns)} turns, expected 2")
    conv = qa.stage1_conversation(turns[1]["value"])
    if conv is None:
        raise RecordError("no_caption", "empty answer")
    return conv["turns"]


def build_meta(kr: KeyedRecord, feats: np.ndarray, stage: int) -> dict:
    """Contract meta.json for an imported sample; what VTimeLLM's record said is kept under `vtimellm`."""
    record = kr.record
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    split = meta.get("split")
    return {"key": kr.key, "dataset": str(record.get("source") or f"vtimellm-stage{stage}"),
            "source_id": str(record.get("id")), "media": record.get("image") or record.get("video"),
            "kind": "image" if stage == 1 else "video",
            "window": list(split) if isinstance(split, list) and len(split) == 2 else None,
            "duration": record_duration(record), "fps": None, "num_frames": None, "frame_indices": None,
            "frame_times": None, "events": [], "caption": None, "encoder": ENCODER, "decoder": None,
            "source_key": kr.video_key if kr.video_key != kr.key else None,
            "vtimellm_meta": meta or None}


def _conversation(kr: KeyedRecord, stage: int, stats: QaStats) -> dict:
    if stage == 1:
        return qa.dialogue_conversation(stage1_turns(kr.record), "import-vtimellm", 1, "caption")
    turns, note = render_dialogue(kr.record, record_duration(kr.record))
    if note:
        stats.notes[note] += 1
    if stage == 3:
        return qa.dialogue_conversation(turns, "import-vtimellm", stage, "dialogue")
    conv = qa.dialogue_conversation(turns, "import-vtimellm", stage,
                                    "dense_captioning" if len(turns) == 2 else "multi_turn")
    found = [qa.identify_template(t["value"]) for t in turns if t["from"] == "human"]
    if None in found:
        stats.notes["templates_unidentified"] += 1
    else:
        conv["templates"] = found
    return conv


def _import_one(kr: KeyedRecord, cfg: ImportConfig, stage: int, out: QaOutput, budget: TokenBudget | None) -> None:
    if kr.key is None:
        reason = "bad_record" if kr.video_key is None else "duplicate_key"
        out.error(record_label(kr), reason, "record has no usable id or repeats another's key")
        return
    rid = str(kr.record.get("id"))
    if Path(rid).name != rid or rid in (".", "..") or "\\" in rid or "\0" in rid or len(rid.encode()) > 250:  # `../x`: outside
        out.error(kr.key, "bad_id", f"id {rid[:80]!r} is not a file name in --features-dir", rid)
        return
    try:
        conv = _conversation(kr, stage, out.stats)
        feats = load_features(storage.join(cfg.features_dir, f"{rid}.npy"), image=stage == 1)
    except RecordError as exc:
        out.error(kr.key, exc.reason, exc.detail, str(kr.record.get("id")))
        return
    if feats.dtype != FEATURE_DTYPE:
        out.stats.notes[f"features_converted_from_{feats.dtype}"] += 1
    if budget is not None:
        budget.check(kr.key, conv["turns"], int(feats.shape[0]))
    out.write(kr.key, feats, build_meta(kr, feats, stage), conv)


def iter_records(path) -> Iterator[object]:
    """The records of a released JSON list, one at a time (LCS-558K is 1.15 GB: never held whole)."""
    with storage.open(path, "r", encoding="utf-8") as f:
        yield from iter_array(f)


def scan_records(path) -> tuple[int, KeyCounts, list]:
    """First pass: number of records, the video keys' counts (for the key rule; `pipeline.qa.import_keys`), the first
    1000 records (stage inference). A file that is not a JSON list is a wrong input: one ValueError, before anything
    is written."""
    n, counts, head = 0, KeyCounts(), []
    try:
        for record in iter_records(path):
            n += 1
            vkey = _video_key(record)
            if vkey is not None:
                counts.add(vkey)
            if len(head) < 1000:
                head.append(record)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path} as JSON: {exc}") from exc
    except ValueError:
        raise ValueError(f"{path}: expected a JSON list of records") from None
    counts.settle(lambda: iter_records(path))
    return n, counts, head


def run_import(cfg: ImportConfig) -> ImportResult:
    n_records, key_counts, head = scan_records(cfg.json)
    stage = cfg.stage or infer_stage(head)
    budget = None if cfg.tokenizer is None else TokenBudget(Path(cfg.tokenizer), cfg.max_tokens,
                                                             cfg.conv_format or default_format(stage))
    stats = QaStats(stage=stage, source="import-vtimellm")
    stats.inputs["records"] = n_records
    out = QaOutput(out_location(cfg.out), f"stage{stage}", "import-vtimellm", stats, cfg.samples_per_shard,
                   cfg.overwrite)
    try:
        keyed = iter_keyed_bounded(iter_records(cfg.json), key_counts)  # second pass, record by record
        for kr in progress_iter(keyed, n_records, f"import stage {stage}", cfg.progress):
            _import_one(kr, cfg, stage, out, budget)
    except BaseException:
        out.abort()  # no half-written shard left behind (a read-only or full output folder)
        raise
    stats.token_budget = budget.report() if budget else not_checked("no --tokenizer given", cfg.max_tokens)
    run_config = {"command": "import-vtimellm", "config": {**asdict(cfg), "stage": stage},
                  "input": {"json": str(cfg.json), "json_sha256": _sha256(cfg.json)}}
    index = out.finish(run_config, ENCODER, None)
    return ImportResult(out_location(cfg.out), index, stats.samples, out.error_count, stage)


def _sha256(location) -> str:
    with storage.open(location, "rb") as f:
        return file_sha256(f)


def summarize(result: ImportResult) -> None:
    print_summary(f"import-vtimellm (stage {result.stage})", result.index)
