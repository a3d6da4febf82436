"""The options of `vtl-pipeline build-qa` (`BuildQaConfig`, one field per CLI option) and their checks; the job that
runs them is pipeline/qa/build.py."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infra import storage
from pipeline.contract.conversation import FORMATS
from pipeline.contract.queries import SHARD_BENCHMARKS
from pipeline.contract.timing import TIME_FORMATS
from pipeline.qa import durations
from pipeline.qa import rules as qa
from pipeline.qa.generate import check_options as check_generate_options

STAGES = ("1", "2", "3")


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
