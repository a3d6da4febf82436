"""`run(cfg)`: prepare the stage's model → stream the data → fit → save. One loop for all three stages.

Every optimizer step appends one line to `metrics.jsonl` (step, loss, lr, tokens, ...) and reports it to TensorBoard,
wandb or MLflow (`--report-to`, train.report); `--save-every N` writes an engine checkpoint (trainable weights, optimizer, schedule, loader position and
RNG state per rank) to `out/engine/`, and `--resume` continues from the latest one: the resumed run trains on exactly
the samples, in exactly the order, an uninterrupted run would have. The final checkpoint (projector, adapters,
vtl_checkpoint.json) is written by train.checkpoint; `run_config.json` beside it records the resolved config.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist

from infra.storage import write_json_atomic
from pipeline.contract.feature_spec import from_index
from pipeline.contract.provenance import RUN_CONFIG, producer
from pipeline.contract.shards import FEATURE_DIM, read_index
from train.config import TrainConfig
from train.data.loader import TrainLoader
from train.engine import init_distributed, make_engine, resolve_precision
from train.errors import NothingToResume, RefusedValue
from train.guard import StepGuard, saving
from train.packing import useful_and_padded
from train.preflight import (
    ENGINE_DIR,
    check_from_spec,
    check_llm,
    check_out,
    check_provenance,
    check_shards,
    check_shards_location,
    out_lock,
    shards_digest,
)
from train.progress import Progress
from train.report import check_reporter, open_reporter
from train.zero3 import log_share, partitioned_build, restore_linear

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


def plan_steps(cfg: TrainConfig, samples_per_epoch: int) -> tuple[int, int]:
    """(steps per epoch, total optimizer steps): an epoch is the shards' sample count over the global batch."""
    per_epoch = max(1, samples_per_epoch // cfg.global_batch)
    total = cfg.max_steps if cfg.max_steps is not None else max(1, math.ceil(cfg.epochs * per_epoch))
    return per_epoch, total


def run(cfg: TrainConfig) -> Path:
    """Train one stage as `cfg` says; returns the checkpoint folder.

    DeepSpeed's process-wide swap of `torch.nn.functional.linear` (ZeRO-3) is undone however the run ends, so an
    in-process caller's next model (evaluation, another run, a test after a refusal) computes with PyTorch's own.
    """
    try:
        return _run(cfg)
    finally:
        restore_linear()


def _run(cfg: TrainConfig) -> Path:
    rank, world = _setup(cfg)
    check_out(cfg)
    check_shards_location(cfg.shards)
    index = read_index(cfg.shards)
    check_shards(index, world)
    check_provenance(cfg, index)
    check_llm(cfg)
    check_from_spec(cfg, index)
    check_reporter(cfg.report_to)
    with out_lock(cfg, rank):  # one vtl-train per --out; the folder is checked again now that this run holds it
        check_out(cfg)
        return _train(cfg, index, rank, world)


def _train(cfg: TrainConfig, index: dict, rank: int, world: int) -> Path:
    from train.checkpoint import save_checkpoint

    out = Path(cfg.out)
    precision = resolve_precision(cfg.precision)
    model = prepare(cfg, precision, index.get("dim") or FEATURE_DIM, rank)

    per_epoch, total = plan_steps(cfg, index["totals"]["samples"])
    engine = make_engine(model, cfg, total)
    start, state = _resume(engine, out, rank) if cfg.resume else (0, {})
    loader = TrainLoader(cfg.shards, tokenizer=model.tokenizer, conv_format=model.conv_format,
                         micro_batch=cfg.micro_batch, max_tokens=cfg.max_tokens, rank=rank, world=world,
                         num_workers=cfg.num_workers, buffer=cfg.shuffle_buffer, seed=cfg.seed,
                         token_cache=cfg.token_cache_dir, state=state.get("loader"),
                         group_by_length=cfg.group_by_length)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / RUN_CONFIG, {"config": cfg.to_dict(), "producer": producer(), "engine": engine.config,
                                             "plan": {"steps_per_epoch": per_epoch, "total_steps": total,
                                                      "accumulation": cfg.accumulation, "world_size": world},
                                             "shards": {"dir": cfg.shards, "samples": index["totals"]["samples"],
                                                        "producer": index.get("producer"),
                                                        "digest": shards_digest(index)}})
    summary = fit(cfg, engine, loader, out, start, total, state, rank)

    projector, adapter = engine.export_trainables()  # every rank: ZeRO-3 gathers the weights
    if rank == 0:
        with saving(out, "the final checkpoint", latest=str(out / ENGINE_DIR), remove=False):
            save_checkpoint(engine.module, out, stage=cfg.stage, config=cfg.to_dict(), projector_state=projector,
                            adapter_state=adapter, encoder=index.get("encoder"),
                            feature_spec=from_index(index).to_json())
        print(f"stage {cfg.stage}: {summary['steps']} steps, final loss {_final_loss(summary, out):.4f}, "
              f"{summary['skipped_long']} samples skipped as longer than max_tokens={cfg.max_tokens}; "
              f"checkpoint in {out}")
    _barrier()
    return out


def _final_loss(summary: dict, out: Path) -> float:
    """The last step's loss; a run resumed after its last step trained none here, so it is the logged one."""
    if math.isfinite(summary["loss"]) or not (out / METRICS).exists():
        return summary["loss"]
    rows = [json.loads(line) for line in (out / METRICS).read_text().splitlines() if line.strip()]
    return rows[-1]["loss"] if rows else summary["loss"]


def prepare(cfg: TrainConfig, precision: str, feature_dim: int, rank: int):
    """The stage's VideoLLM in training mode (built partitioned under ZeRO-3, so no rank builds the whole LLM)."""
    from train.stages import prepare_model

    torch.manual_seed(cfg.seed + rank)  # dropout (LoRA) differs per rank, as data does
    dtype = torch.bfloat16 if precision == "bf16" else None
    with partitioned_build(cfg, precision):
        model = prepare_model(cfg, dtype=dtype, feature_dim=feature_dim)
    log_share(model.llm, rank)
    model.pack = cfg.pack
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    return model


def fit(cfg: TrainConfig, engine, loader: TrainLoader, out: Path, start: int, total: int, state: dict,
        rank: int) -> dict:
    """The training loop: micro-batches until `total` optimizer steps, logging each step, saving every N."""
    metrics = _MetricsLog(out, start, rank, cfg)
    tokens, elapsed = state.get("tokens", 0), state.get("elapsed", 0.0)
    padded_tokens, micro_padded = state.get("padded_tokens", 0), 0
    step, losses, micro_tokens, last = start, [], 0, {"loss": float("nan"), "skipped_long": 0}
    t0 = time.perf_counter() - elapsed
    bar = Progress(total, start, enabled=cfg.progress and rank == 0, label=f"stage {cfg.stage}")
    guard = StepGuard()
    batches = iter(loader)
    while step < total:
        batch, keys = next(batches)
        useful, padded = useful_and_padded(batch, cfg.pack)  # positions the LLM computes: samples, padding
        micro_tokens, micro_padded = micro_tokens + useful, micro_padded + padded
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        batch["features"] = batch["features"].to(engine.dtype)
        loss = engine.forward(batch)
        guard.add(loss, batch["features"], keys)
        engine.backward(loss)
        losses.append(loss.detach().float())
        lr = engine.lr
        metrics.keys(step + 1, keys)
        if not engine.step():
            continue
        step += 1
        mean_loss, step_tokens, skipped, step_padded = _reduce(torch.stack(losses).mean(), micro_tokens,
                                                               loader.skipped_long, micro_padded)
        guard.check(mean_loss, step)  # every rank sees the same reduced loss, so all stop together
        tokens, padded_tokens = tokens + step_tokens, padded_tokens + step_padded
        seconds = time.perf_counter() - t0
        last = {"step": step, "loss": mean_loss, "lr": lr, "tokens": tokens, "padded_tokens": padded_tokens,
                "samples": step * cfg.global_batch,
                "epoch": round(step * cfg.global_batch / max(1, loader.samples_per_epoch), 4),
                "tokens_per_s": round(tokens / max(seconds, 1e-9), 1), "skipped_long": skipped,
                "elapsed_s": round(seconds, 3)}
        metrics.write(last)
        bar.update(step, last)
        losses, micro_tokens, micro_padded = [], 0, 0
        if cfg.save_every and step % cfg.save_every == 0 or step == total:
            save_state(engine, out, step, {"loader": loader.state_dict(), "tokens": tokens,
                                           "padded_tokens": padded_tokens, "elapsed": seconds}, rank)
    bar.close()
    metrics.close()
    return {"steps": step, "loss": last["loss"], "skipped_long": last["skipped_long"]}


def save_state(engine, out: Path, step: int, client: dict, rank: int) -> None:
    """Per-rank trainer state (loader position, RNG) first, then the engine's own save, whose `latest` comes last."""
    tag = f"step{step:08d}"
    folder = out / ENGINE_DIR / tag
    latest = out / ENGINE_DIR / "latest"
    rng = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state().tolist()
    with saving(folder, f"the engine state of step {step}", latest.read_text().strip() if latest.exists() else None):
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / f"trainer_rank{rank}.json", {"step": step, **client, "rng": rng})
        _barrier()
        engine.save(out / ENGINE_DIR, tag)
        _barrier()
    if rank == 0:  # keep only the checkpoint `latest` names (VTimeLLM: save_total_limit 1); it is complete by now
        for old in (out / ENGINE_DIR).glob("step*"):
            if old.is_dir() and old.name != tag:
                shutil.rmtree(old)


def _resume(engine, out: Path, rank: int) -> tuple[int, dict]:
    tag = engine.load(out / ENGINE_DIR)
    if tag is None:
        raise NothingToResume(f"--resume: no engine checkpoint in {out / ENGINE_DIR}")
    state = json.loads((out / ENGINE_DIR / tag / f"trainer_rank{rank}.json").read_text())
    torch.set_rng_state(torch.tensor(state["rng"]["torch"], dtype=torch.uint8))
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["rng"]["cuda"], dtype=torch.uint8))
    log.info("resumed from %s (step %d)", tag, state["step"])
    if rank == 0:
        print(f"resuming from {out / ENGINE_DIR / tag} at step {state['step']}")
    return state["step"], state


def _setup(cfg: TrainConfig) -> tuple[int, int]:
    if cfg.engine == "torch":
        return 0, 1
    rank, world, _ = init_distributed()
    if world != cfg.world_size:
        raise RefusedValue(f"config says world size {cfg.world_size} but the launcher started {world} processes")
    return rank, world


def _reduce(loss: torch.Tensor, tokens: int, skipped: int, padded: int) -> tuple[float, int, int, int]:
    """Mean loss, summed tokens, skipped samples and padding over ranks (one small all-reduce per step)."""
    values = torch.tensor([float(loss), float(tokens), float(skipped), float(padded)], dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        values = values.to("cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(values)
        values[0] /= dist.get_world_size()
    return float(values[0]), int(values[1]), int(values[2]), int(values[3])


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class _MetricsLog:
    """metrics.jsonl + the --report-to reporter on rank 0; `keys.rank{R}.jsonl` per rank with --log-keys. Resume trims
    the tail."""

    def __init__(self, out: Path, start: int, rank: int, cfg: TrainConfig):
        self.rank, self.report, self.metrics, self.key_file = rank, None, None, None
        out.mkdir(parents=True, exist_ok=True)
        if cfg.log_keys:
            self.key_file = _open_trimmed(out / f"keys.rank{rank}.jsonl", start)
        if rank != 0:
            return
        self.metrics = _open_trimmed(out / METRICS, start)
        self.report = open_reporter(cfg.report_to, out, start, cfg.to_dict())

    def keys(self, step: int, keys: list[str]) -> None:
        if self.key_file:
            self.key_file.write(json.dumps({"step": step, "keys": keys}) + "\n")

    def write(self, row: dict) -> None:
        if self.key_file:  # on disk by the step's engine save, so a killed rank's record survives up to it
            self.key_file.flush()
        if self.metrics is None:
            return
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()
        self.report.log(row)

    def close(self) -> None:
        for f in (self.metrics, self.key_file):
            if f:
                f.close()
        if self.report:
            self.report.close()


def _open_trimmed(path: Path, start: int):
    """Open a per-step JSON-lines file for appending, first dropping lines after step `start` (a resumed tail)."""
    if start and path.exists():
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= start]
        path.write_text("".join(line + "\n" for line in keep))
    elif path.exists():
        path.unlink()
    return open(path, "a")
