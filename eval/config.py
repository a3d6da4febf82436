"""One frozen config per command (`vtl-eval score`, `vtl-eval grounding|dvc`, `vtl-chat`), validated on creation.

The CLIs generate their options from these fields and their docstrings (infra.options); nothing below the CLI
sees typer.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from infra.options import Group
from pipeline.contract.conversation import FORMATS
from pipeline.contract.queries import BENCHMARKS, QVHIGHLIGHTS

DTYPES = ("auto", "float32", "bfloat16", "float16")
SCORE_BENCHMARKS = (*BENCHMARKS, QVHIGHLIGHTS)
"""What `vtl-eval score` scores: the benchmarks a checkpoint is evaluated on, and QVHighlights submissions."""


def _exists(path: Path | None, what: str) -> None:
    if path is not None and not Path(path).exists():
        raise FileNotFoundError(f"{what} not found: {path}")


def _location(value: str | Path, what: str, local_only: str | None = None) -> str | Path:
    """A local path as a Path; an s3:// / gs:// URL kept a string (Path() would make s3://b/x a local s3:/b/x),
    or refused in one line saying why (`local_only`) where only local files are read."""
    from infra import storage

    if not storage.is_remote(value):
        return Path(storage.local_path(str(value)))
    if local_only:
        raise ValueError(f"{what} {value}: must be a local or shared-filesystem path ({local_only}); copy it here "
                         "first")
    return storage.resolve(value)


TIMELINE_MAX = {"timeline_queries": 200, "timeline_videos": 50}
"""Most rows / panels `timeline.png` takes (it grows by about 32 px a query and 100–200 px a video)."""


def _check_timeline(cfg) -> None:
    for name, most in TIMELINE_MAX.items():
        if not 0 <= getattr(cfg, name) <= most:
            raise ValueError(f"{name} must be in 0..{most}, got {getattr(cfg, name)}")


@dataclass(frozen=True)
class ScoreConfig:
    """`vtl-eval score`: score an existing predictions file without a model."""

    benchmark: str
    """grounding, dvc or qvhighlights (the benchmark's JSONL submission against its JSONL annotations)."""
    predictions: str | Path
    """Predictions JSONL (one query a line)."""
    annotations: str | Path
    """Ground truth: any annotation file the manifest readers accept, or a manifest Parquet."""
    out: str | Path | None = None
    """Folder for metrics.json, the plots and run_config.json (default: the predictions file's folder); a path or an
    s3:// / gs:// URL (written locally, then uploaded, run_config.json last)."""
    dataset: str | None = None
    """Manifest reader name (charades, activitynet, ...); guessed from the suffix (.txt charades, .json activitynet)."""
    durations: str | Path | None = None
    """Durations file the reader needs (Charades-STA: the Charades CSV with its `length` column)."""
    timeline_queries: int = 20
    """Grounding: the first N queries drawn in timeline.png (ground-truth vs predicted span, a row each); 0 = none."""
    timeline_videos: int = 5
    """Dense captioning: the first K videos drawn in timeline.png (ground-truth and predicted events); 0 = none."""

    def __post_init__(self) -> None:
        if self.benchmark not in SCORE_BENCHMARKS:
            raise ValueError(f"benchmark must be one of {SCORE_BENCHMARKS}, got {self.benchmark!r}")
        for name in ("predictions", "annotations", "durations"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _location(getattr(self, name), f"--{name}", "score reads local files"))
        _exists(self.predictions, "predictions file")
        _exists(self.annotations, "annotations")
        _exists(self.durations, "durations file")
        _check_timeline(self)
        object.__setattr__(self, "out", Path(self.predictions).parent if self.out is None
                           else _location(self.out, "--out"))

    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class EvalConfig:
    """`vtl-eval grounding|dvc|qvhighlights`: generate answers for evaluation shards with a checkpoint, then score."""

    benchmark: str
    """grounding, dvc or qvhighlights (the subcommand)."""
    checkpoint: str | Path
    """A vtl checkpoint folder (vtl-train --out, or an imported VTimeLLM checkpoint); a local path."""
    shards: str | Path
    """Evaluation shards (vtl-pipeline build-qa --benchmark BENCHMARK): a path or an s3:// / gs:// URL (streamed)."""
    out: str | Path
    """Folder for predictions.jsonl, metrics.json, the plots and run_config.json: a path, or an s3:// / gs:// URL
    (written to a local spool folder, then uploaded file by file, run_config.json last)."""
    llm: str | None = None
    """Override of the checkpoint's LLM source (local path or hub name)."""
    batch_size: int = 8
    """Queries generated together (left padding); 1 = one query at a time, as VTimeLLM does."""
    max_new_tokens: int = 1024
    """Generation limit per answer: VTimeLLM's 1024. About 1 in 10 ActivityNet dense-caption answers in its JSON layout
    is over 256 tokens with the Vicuna tokenizer, and a cut answer is unparsable; most answers end at EOS long before."""
    device: str = "auto"
    """cuda when available, else cpu; or name one."""
    dtype: str = "auto"
    """auto = bfloat16 on GPU, float32 on CPU."""
    limit: int | None = None
    """Evaluate only the first N queries (smoke runs)."""
    conv_format: str | None = None
    """Prompt format override (plain, v1, chatglm3, chat_template); default: the checkpoint's. A stage-1 checkpoint
    is `plain`, which drops the question, so evaluate it with v1."""
    timeline_queries: int = 20
    """Grounding: the first N queries drawn in timeline.png (ground-truth vs predicted span, a row each); 0 = none."""
    timeline_videos: int = 5
    """Dense captioning: the first K videos drawn in timeline.png (ground-truth and predicted events); 0 = none."""
    annotations: str | Path | None = None
    """QVHighlights: the benchmark's JSONL (highlight_{val,test}_release.jsonl), a local path; it gives each query
    its qid for submission.jsonl, and a labelled split is scored."""

    def __post_init__(self) -> None:
        if self.benchmark not in SCORE_BENCHMARKS:
            raise ValueError(f"benchmark must be one of {SCORE_BENCHMARKS}, got {self.benchmark!r}")
        if (self.annotations is None) == (self.benchmark == QVHIGHLIGHTS):
            raise ValueError("--annotations is required for qvhighlights (the JSONL its qids come from) and not used "
                             "otherwise")
        if self.annotations is not None:
            object.__setattr__(self, "annotations", _location(self.annotations, "--annotations", "read locally"))
            _exists(self.annotations, "annotations")
        for name, local_only in (("checkpoint", "vtl-eval loads checkpoints from folders"), ("shards", None),
                                 ("out", None)):
            object.__setattr__(self, name, _location(getattr(self, name), f"--{name}", local_only))
        _exists(self.checkpoint, "checkpoint folder")
        if not isinstance(self.shards, str):
            _exists(self.shards, "shard folder")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be >= 1")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be >= 1")
        if self.conv_format not in (None, *FORMATS):
            raise ValueError(f"conv_format must be one of {FORMATS}, got {self.conv_format!r}")
        _check_timeline(self)

    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


LLM_OPTIONS = Group(EvalConfig, {"llm": "llm", "device": "device", "dtype": "dtype"})
"""`--llm/--device/--dtype`, shared by `vtl-eval grounding|dvc` and `vtl-chat`."""


@dataclass(frozen=True)
class ChatConfig:
    """`vtl-chat VIDEO --checkpoint DIR`: features of one video, then questions in a loop or one-shot."""

    video: Path
    """A video file."""
    checkpoint: Path
    """A vtl checkpoint folder."""
    question: str | None = None
    """Ask this one question and exit; without it, read questions from the terminal until empty input / EOF."""
    llm: str | None = None
    """Override of the checkpoint's LLM source (local path or hub name)."""
    clip_model: str = "ViT-L-14"
    """open_clip model name used for features (tiny-random for tests), as extract takes it."""
    clip_weights: str | None = None
    """Local CLIP weights file (e.g. ViT-L-14.pt)."""
    clip_pretrained: str | None = None
    """open_clip hub tag (e.g. openai), exclusive with clip_weights."""
    max_new_tokens: int = 256
    """Generation limit per answer."""
    device: str = "auto"
    """cuda when available, else cpu; or name one."""
    dtype: str = "auto"
    """auto = bfloat16 on GPU, float32 on CPU."""
    web: bool = False
    """Serve a web page (Gradio, `eval.web`) instead of the terminal loop: video, chat, answers' spans on a timeline."""
    host: str = "127.0.0.1"
    """Address the web page listens on (--web); 0.0.0.0 exposes it to the network."""
    port: int = 7860
    """Port of the web page (--web)."""
    max_question_chars: int = 2000
    """Longest question taken, in characters; a question whose prompt (the conversation so far, the video's frames
    and max_new_tokens) would not fit the LLM's context is refused too, in one line."""
    max_video_pixels: int = 3840 * 2160
    """Largest frame of a video the chat takes, in pixels (4K UHD; 0 = no bound): a larger one is refused from its
    header before anything is decoded (an 8K video's 100 frames are 10 GB of pixels)."""
    max_video_seconds: float = 3600.0
    """Longest video the chat takes, in seconds (0 = no bound)."""
    max_upload_mb: int = 500
    """Largest file a visitor of the web page may upload, in MB (--web; Gradio refuses larger ones)."""
    web_queue_size: int = 16
    """Questions and uploads waiting on the web page at most (--web); one generation and one extraction run at a time,
    the others wait their turn, and a visitor beyond this is told the queue is full."""
    web_upload_ttl: int = 3600
    """Seconds an upload may stay on disk (--web): a visitor's upload is deleted when they leave, when they upload
    another, and at the latest this long after it arrived; everything uploaded is deleted when the server stops."""

    def __post_init__(self) -> None:
        _exists(self.video, "video")
        _exists(self.checkpoint, "checkpoint folder")
        if self.web and self.question is not None:
            raise ValueError("--web and --question are exclusive: the page is where questions are asked")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}")
        for name in ("max_question_chars", "max_upload_mb", "web_queue_size", "web_upload_ttl"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_video_pixels < 0 or not 0 <= self.max_video_seconds < float("inf"):
            raise ValueError("max_video_pixels and max_video_seconds must be finite and >= 0 (0 = no bound)")


def resolve_device(device: str, dtype: str):
    """(torch device string, torch dtype) for `auto` choices: GPU + bfloat16 when available, else CPU + float32."""
    import torch

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA GPU here; use --device cpu or auto")
    if dtype == "auto":
        return dev, torch.bfloat16 if dev.startswith("cuda") else torch.float32
    return dev, getattr(torch, dtype)
