"""`vtl-eval`: temporal grounding and dense-captioning evaluation, and scoring of existing predictions.

Options are generated from `eval.config`'s dataclasses (infra.options), which hold every default.
"""
from __future__ import annotations

from pathlib import Path

import typer

from eval.config import LLM_OPTIONS, EvalConfig, ScoreConfig
from infra.options import flag, options
from infra.usage import fail, strict_command_class

app = typer.Typer(help="Evaluate a checkpoint (grounding, dvc, qvhighlights) or score a predictions file.", no_args_is_help=True,
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


@app.command("score", cls=STRICT)
@options(ScoreConfig, flags={"benchmark": flag(required=False, help="grounding, dvc or qvhighlights (required).")},
         extra={"task": flag("--task", type=str, hidden=True, help="Renamed: --benchmark.")})
def score_cmd(given: dict) -> None:
    """Score an existing predictions file (ours or another system's) without a model."""
    from eval.runner import run_score

    if "task" in given:
        fail(f"--task is now --benchmark: use --benchmark {given['task']}")
    if "benchmark" not in given:  # checked here, after --task, so the retired spelling gets its own message
        fail("--benchmark is required: grounding, dvc or qvhighlights")
    try:
        cfg = ScoreConfig(**given)
        metrics = run_score(cfg)
    except (ValueError, OSError) as exc:  # OSError: a read-only or full output folder, an unreadable input
        fail(exc)
    _print_metrics(metrics, cfg.out)


def _evaluation(benchmark: str, doc: str) -> None:
    """`vtl-eval grounding`, `dvc` and `qvhighlights`: one command each, EvalConfig's options (--annotations:
    qvhighlights only)."""
    def evaluate(given: dict) -> None:
        from eval.parallel import world_from_env
        from eval.runner import run_eval

        try:
            cfg = EvalConfig(benchmark=benchmark, **given)
            world = world_from_env()
            if world.size > 1:  # under torchrun / deepspeed: the ranks share the queries
                from eval.parallel_run import run_eval_parallel

                metrics = run_eval_parallel(cfg, world)
            else:
                metrics = run_eval(cfg)
        except (ValueError, OSError) as exc:  # OSError: a read-only or full output folder, an unreadable input
            fail(exc)
        if metrics is None:  # a data-parallel rank other than 0: rank 0 reports
            return
        if "MR-full-mAP" in metrics or metrics.get("scored") is False:
            _print_qvhighlights(metrics, cfg.out)
            return
        _print_metrics(metrics, cfg.out)
        typer.echo(f"wrote {cfg.out}/predictions.jsonl, {cfg.out}/{benchmark}.png")

    evaluate.__doc__ = doc
    skip = ("benchmark",) if benchmark == "qvhighlights" else ("benchmark", "annotations")
    command = options(EvalConfig, skip=skip, groups=(LLM_OPTIONS,))(evaluate)
    app.command(benchmark, cls=STRICT)(command)


_evaluation("grounding", "Temporal grounding: R1@{0.3,0.5,0.7} and mIoU of a checkpoint on evaluation shards.")
_evaluation("dvc", "Dense video captioning: SODA_c, CIDEr, METEOR, BLEU-4 of a checkpoint on evaluation shards.")


_evaluation("qvhighlights", "QVHighlights moment retrieval and highlight detection: submission.jsonl in the "
            "benchmark's format, scored when --annotations has labels.")


def _print_qvhighlights(metrics: dict, out: Path) -> None:
    if metrics.get("scored") is False:
        typer.echo(f"{metrics['reason']}; wrote {out}/submission.jsonl")
        return
    _print_metrics(metrics, out)
    typer.echo(f"wrote {out}/submission.jsonl, {out}/predictions.jsonl")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
