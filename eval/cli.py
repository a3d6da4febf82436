"""`vtl-eval`: temporal grounding and dense-captioning evaluation, and scoring of existing predictions."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Evaluate a checkpoint (grounding, dvc) or score a predictions file.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def _line(metrics: dict) -> str:
    return "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
                     if not isinstance(v, (dict, str)))


def _print_metrics(metrics: dict, out: Path) -> None:
    typer.echo(f"{metrics.get('scoring', '')}: {_line(metrics)}")
    if "lenient" in metrics:
        typer.echo(f"lenient ({metrics['lenient']['rules']}): {_line(metrics['lenient'])}")
    typer.echo(f"wrote {out}/metrics.json")


@app.command("score")
def score_cmd(
    task: str = typer.Option(..., "--task", help="grounding or dvc."),
    predictions: Path = typer.Option(..., "--predictions", help="Predictions JSONL, one query a line."),
    annotations: Path = typer.Option(..., "--annotations", help="Annotation file the manifest readers accept, "
                                     "or a manifest .parquet."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Reader name; guessed from the suffix "
                                          "(.txt charades, .json activitynet)."),
    durations: Optional[Path] = typer.Option(None, "--durations", help="Durations file (Charades CSV)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: beside the predictions)."),
) -> None:
    """Score an existing predictions file (ours or another system's) without a model."""
    from eval.config import ScoreConfig
    from eval.runner import run_score

    try:
        cfg = ScoreConfig(task=task, predictions=predictions, annotations=annotations, dataset=dataset,
                          durations=durations, out=out or predictions.parent)
        metrics = run_score(cfg)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    _print_metrics(metrics, cfg.out)


def _evaluate(task: str, checkpoint: Path, shards: Path, out: Path, llm: Optional[str], batch_size: int,
              max_new_tokens: int, device: str, dtype: str, limit: Optional[int],
              conv_format: Optional[str]) -> None:
    from eval.config import EvalConfig
    from eval.runner import run_eval

    try:
        cfg = EvalConfig(task=task, checkpoint=checkpoint, shards=shards, out=out, llm=llm, batch_size=batch_size,
                         max_new_tokens=max_new_tokens, device=device, dtype=dtype, limit=limit,
                         conv_format=conv_format)
        metrics = run_eval(cfg)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    _print_metrics(metrics, out)
    typer.echo(f"wrote {out}/predictions.jsonl, {out}/{task}.png")


_CKPT = typer.Option(..., "--checkpoint", help="vtl checkpoint folder.")
_SHARDS = typer.Option(..., "--shards", help="Evaluation shards (build-qa --stage eval).")
_OUT = typer.Option(..., "--out", help="Output folder.")
_LLM = typer.Option(None, "--llm", help="Override the checkpoint's LLM (local path or hub name).")
_BATCH = typer.Option(8, "--batch-size", help="Queries generated together (1 = one at a time).")
_MAXNEW = typer.Option(1024, "--max-new-tokens", help="Generation limit per answer (VTimeLLM's 1024).")
_DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N.")
_DTYPE = typer.Option("auto", "--dtype", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.")
_LIMIT = typer.Option(None, "--limit", help="Only the first N queries (smoke runs).")
_FMT = typer.Option(None, "--conv-format", help="Prompt format (plain, v1, ...); default: the checkpoint's.")


@app.command("grounding")
def grounding_cmd(checkpoint: Path = _CKPT, shards: Path = _SHARDS, out: Path = _OUT, llm: Optional[str] = _LLM,
                  batch_size: int = _BATCH, max_new_tokens: int = _MAXNEW, device: str = _DEVICE,
                  dtype: str = _DTYPE, limit: Optional[int] = _LIMIT,
                  conv_format: Optional[str] = _FMT) -> None:
    """Temporal grounding: R1@{0.3,0.5,0.7} and mIoU of a checkpoint on evaluation shards."""
    _evaluate("grounding", checkpoint, shards, out, llm, batch_size, max_new_tokens, device, dtype, limit,
              conv_format)


@app.command("dvc")
def dvc_cmd(checkpoint: Path = _CKPT, shards: Path = _SHARDS, out: Path = _OUT, llm: Optional[str] = _LLM,
            batch_size: int = _BATCH, max_new_tokens: int = _MAXNEW, device: str = _DEVICE,
            dtype: str = _DTYPE, limit: Optional[int] = _LIMIT,
            conv_format: Optional[str] = _FMT) -> None:
    """Dense video captioning: SODA_c, CIDEr, METEOR, BLEU-4 of a checkpoint on evaluation shards."""
    _evaluate("dvc", checkpoint, shards, out, llm, batch_size, max_new_tokens, device, dtype, limit,
              conv_format)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
