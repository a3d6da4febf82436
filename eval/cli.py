"""`vtl-eval`: temporal grounding and dense-captioning evaluation, and scoring of existing predictions.

Options default to None ("not set"): `eval.config` holds every default (infra.usage).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from infra.usage import fail, given, strict_command_class

app = typer.Typer(help="Evaluate a checkpoint (grounding, dvc) or score a predictions file.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
STRICT = strict_command_class()
"""Every command refuses an option given twice (the last would silently win)."""


def _line(metrics: dict) -> str:
    return "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
                     if not isinstance(v, (dict, str, list)))


def _print_metrics(metrics: dict, out: Path) -> None:
    if metrics.get("missing"):
        typer.echo(f"warning: {metrics['missing']} annotated queries (dvc: videos) have no prediction; "
                   f"{metrics['missing_rule']}", err=True)
    typer.echo(f"{metrics.get('scoring', '')}: {_line(metrics)}")
    if "lenient" in metrics:
        typer.echo(f"lenient ({metrics['lenient']['rules']}): {_line(metrics['lenient'])}")
    typer.echo(f"wrote {out}/metrics.json")


_TLQ = typer.Option(None, "--timeline-queries", help="Grounding: the first N queries drawn in timeline.png "
                    "(default 20; 0 = none).")
_TLV = typer.Option(None, "--timeline-videos", help="Dense captioning: the first K videos drawn in timeline.png "
                    "(default 5; 0 = none).")


@app.command("score", cls=STRICT)
def score_cmd(
    benchmark: Optional[str] = typer.Option(None, "--benchmark", help="grounding, dvc or qvhighlights (required)."),
    predictions: str = typer.Option(..., "--predictions", help="Predictions JSONL, one query a line."),
    annotations: str = typer.Option(..., "--annotations", help="Annotation file the manifest readers accept, "
                                     "or a manifest .parquet."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Reader name; guessed from the suffix "
                                          "(.txt charades, .json activitynet)."),
    durations: Optional[str] = typer.Option(None, "--durations", help="Durations file (Charades CSV)."),
    out: Optional[str] = typer.Option(None, "--out", help="Output folder (default: beside the predictions); path or "
                                      "s3:// / gs:// URL."),
    timeline_queries: Optional[int] = _TLQ, timeline_videos: Optional[int] = _TLV,
    task: Optional[str] = typer.Option(None, "--task", hidden=True, help="Renamed: --benchmark."),
) -> None:
    """Score an existing predictions file (ours or another system's) without a model."""
    from eval.config import ScoreConfig
    from eval.runner import run_score

    if task is not None:
        fail(f"--task is now --benchmark: use --benchmark {task}")
    if benchmark is None:
        fail("--benchmark is required: grounding, dvc or qvhighlights")
    try:
        cfg = ScoreConfig(**given(benchmark=benchmark, predictions=predictions, annotations=annotations,
                                  dataset=dataset, durations=durations, out=out,
                                  timeline_queries=timeline_queries, timeline_videos=timeline_videos))
        metrics = run_score(cfg)
    except (ValueError, OSError) as exc:  # OSError: a read-only or full output folder, an unreadable input
        fail(exc)
    _print_metrics(metrics, cfg.out)


def _evaluate(benchmark: str, **options) -> None:
    from eval.config import EvalConfig
    from eval.runner import run_eval

    try:
        cfg = EvalConfig(benchmark=benchmark, **given(**options))
        metrics = run_eval(cfg)
    except (ValueError, OSError) as exc:  # OSError: a read-only or full output folder, an unreadable input
        fail(exc)
    _print_metrics(metrics, cfg.out)
    typer.echo(f"wrote {cfg.out}/predictions.jsonl, {cfg.out}/{benchmark}.png")


_CKPT = typer.Option(..., "--checkpoint", help="vtl checkpoint folder.")
_SHARDS = typer.Option(..., "--shards", help="Evaluation shards (build-qa --benchmark); path or s3:// / gs:// URL.")
_OUT = typer.Option(..., "--out", help="Output folder; path or s3:// / gs:// URL.")
_LLM = typer.Option(None, "--llm", help="Override the checkpoint's LLM (local path or hub name).")
_BATCH = typer.Option(None, "--batch-size", help="Queries generated together (1 = one at a time; default 8).")
_MAXNEW = typer.Option(None, "--max-new-tokens", help="Generation limit per answer, VTimeLLM's (default 1024).")
_DEVICE = typer.Option(None, "--device", help="auto (default), cpu, cuda, cuda:N.")
_DTYPE = typer.Option(None, "--dtype", help="auto (default; bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.")
_LIMIT = typer.Option(None, "--limit", help="Only the first N queries (smoke runs).")
_FMT = typer.Option(None, "--conv-format", help="Prompt format (plain, v1, ...); default: the checkpoint's.")


@app.command("grounding", cls=STRICT)
def grounding_cmd(checkpoint: str = _CKPT, shards: str = _SHARDS, out: str = _OUT, llm: Optional[str] = _LLM,
                  batch_size: Optional[int] = _BATCH, max_new_tokens: Optional[int] = _MAXNEW,
                  device: Optional[str] = _DEVICE, dtype: Optional[str] = _DTYPE, limit: Optional[int] = _LIMIT,
                  conv_format: Optional[str] = _FMT, timeline_queries: Optional[int] = _TLQ,
                  timeline_videos: Optional[int] = _TLV) -> None:
    """Temporal grounding: R1@{0.3,0.5,0.7} and mIoU of a checkpoint on evaluation shards."""
    _evaluate("grounding", checkpoint=checkpoint, shards=shards, out=out, llm=llm, batch_size=batch_size,
              max_new_tokens=max_new_tokens, device=device, dtype=dtype, limit=limit, conv_format=conv_format,
              timeline_queries=timeline_queries, timeline_videos=timeline_videos)


@app.command("dvc", cls=STRICT)
def dvc_cmd(checkpoint: str = _CKPT, shards: str = _SHARDS, out: str = _OUT, llm: Optional[str] = _LLM,
            batch_size: Optional[int] = _BATCH, max_new_tokens: Optional[int] = _MAXNEW,
            device: Optional[str] = _DEVICE, dtype: Optional[str] = _DTYPE, limit: Optional[int] = _LIMIT,
            conv_format: Optional[str] = _FMT, timeline_queries: Optional[int] = _TLQ,
            timeline_videos: Optional[int] = _TLV) -> None:
    """Dense video captioning: SODA_c, CIDEr, METEOR, BLEU-4 of a checkpoint on evaluation shards."""
    _evaluate("dvc", checkpoint=checkpoint, shards=shards, out=out, llm=llm, batch_size=batch_size,
              max_new_tokens=max_new_tokens, device=device, dtype=dtype, limit=limit, conv_format=conv_format,
              timeline_queries=timeline_queries, timeline_videos=timeline_videos)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
