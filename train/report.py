"""Where a run's per-step metrics go besides `metrics.jsonl` (`vtl-train --report-to`): TensorBoard (the default),
Weights & Biases, MLflow, or nowhere.

`metrics.jsonl` stays the record; a reporter mirrors rows of it. TensorBoard gets the scalars it always got
(`train/loss`, `train/lr`, `train/tokens_per_s`, `train/skipped_long`, `train/epoch`) under `OUT/tensorboard/`.
wandb and MLflow get every number of each row (`train/<key>`, the row's `step` as their step), plus the resolved
config as the run's config / parameters:
- wandb runs offline unless `WANDB_MODE` says otherwise (files under `OUT/wandb/`; `wandb sync OUT/wandb/offline-run-*`
  uploads one), so a training node needs no account or network;
- MLflow writes to `MLFLOW_TRACKING_URI` when set, else to a local file store `OUT/mlruns` (`mlflow ui
  --backend-store-uri OUT/mlruns` shows it; MLflow 3 wants `MLFLOW_ALLOW_FILE_STORE=true` for it, which is set for
  this default); experiment `vtl`, one run per `vtl-train` call.
wandb and mlflow are optional packages, imported only here and only when chosen; a missing one stops the run before
any work with one line saying what to install. A resumed run opens a new wandb/MLflow run that starts at the resumed
step (TensorBoard purges the steps after it, as before).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

REPORTERS = ("tensorboard", "wandb", "mlflow", "none")
TENSORBOARD = "tensorboard"
TB_SCALARS = ("loss", "lr", "tokens_per_s", "skipped_long", "epoch")
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def check_reporter(name: str) -> None:
    """Refuse (one line) a `name` that is unknown or whose package is not installed."""
    import importlib.util

    from train.errors import RefusedValue

    if name not in REPORTERS:
        raise RefusedValue(f"--report-to must be one of {', '.join(REPORTERS)}, got {name!r}")
    package = _PACKAGES.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise RefusedValue(f"--report-to {name} needs the {package} package: pip install {package} "
                         "(or choose another --report-to)")


def _numbers(row: dict) -> dict:
    return {f"train/{k}": v for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class _TensorBoard:
    def __init__(self, out: Path, start: int, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out / TENSORBOARD), purge_step=start + 1 if start else None)

    def log(self, row: dict) -> None:
        for name in TB_SCALARS:
            self.writer.add_scalar(f"train/{name}", row[name], row["step"])

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, out: Path, start: int, config: dict):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "vtl"), dir=str(out), name=out.name,
                              config=config, mode=os.environ.get("WANDB_MODE", "offline"), reinit="create_new")

    def log(self, row: dict) -> None:
        self.run.log(_numbers(row), step=row["step"])

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, out: Path, start: int, config: dict):
        import mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # MLflow 3 keeps the file store behind this switch; it is the one store that needs no server
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (out / "mlruns").resolve().as_uri()
        self.client = mlflow.MlflowClient(uri)
        experiment = self.client.get_experiment_by_name("vtl")
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("vtl")
        self.run_id = self.client.create_run(experiment_id, run_name=out.name).info.run_id
        for key, value in config.items():
            self.client.log_param(self.run_id, key, str(value)[:500])  # MLflow caps a parameter's value

    def log(self, row: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, row["step"])
                                                     for k, v in _numbers(row).items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class _Nowhere:
    def log(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


def open_reporter(name: str, out: Path, start: int, config: dict):
    """The reporter `--report-to name` asks for (rank 0 only): `.log(row)` per step, `.close()` at the end."""
    check_reporter(name)
    kinds = {"tensorboard": _TensorBoard, "wandb": _Wandb, "mlflow": _MLflow}
    return kinds[name](out, start, config) if name in kinds else _Nowhere()
