"""Checks `vtl-train` makes before it builds anything, so a refusal takes a second, not a model load.

- `--out`: a new run refuses a folder holding a checkpoint or an interrupted run; `--resume` needs a saved engine state
  and the same options (those in RESUME_FREE may change).
- `--shards`: a reachable location (an object store's credentials, endpoint and bucket checked in one request) with
  at least as many shards as processes.
- `--from`: its checkpoint was trained on features of the spec `--shards` has (pipeline.contract.feature_spec), and,
  after stage 1, on the same time format.
- `--llm` (or the LLM a `--from` checkpoint continues from): `tiny-random`, a local model folder, or a hub name that
  can be had (infra.hub: with the hub offline it must be in the local cache, and an unreachable hub is said in three
  seconds instead of transformers' minute of retries).
- provenance (`check_provenance`): `--resume` reads the same shards the run was started on (`shards_digest` of
  index.json, recorded in run_config.json's `shards.digest`); `--from` continues a checkpoint made from features of
  the same encoder and width as `--shards` (its vtl_checkpoint.json `encoder` and `feature_dim`), so a width mismatch
  is one line here, not a shape error at the first forward.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import fields
from pathlib import Path

from infra.hub import looks_like_path
from pipeline.contract.provenance import RUN_CONFIG, TINY_RANDOM
from train.config import TrainConfig
from train.errors import NothingToResume, OutBusy, OutExists, RefusedValue

ENGINE_DIR = "engine"
LATEST = "latest"
# Fields that may differ between a run and its resume; anything else changing would change what is trained.
RESUME_FREE = {"resume", "progress", "log_keys", "preset", "token_cache"}
RUN_LOCK = ".train.lock"
"""The run lock in `--out` (infra.lock): two vtl-train runs on one folder would overwrite each other's saves."""


def check_out(cfg: TrainConfig) -> None:
    """Refuse to overwrite a finished or running checkpoint unless resuming it with the same config."""
    from train.llm_source import CHECKPOINT_JSON

    out = Path(cfg.out)
    saved_state = (out / ENGINE_DIR / LATEST).exists()
    if not cfg.resume:
        if (out / CHECKPOINT_JSON).exists() or saved_state:
            raise OutExists(f"{out} already holds a (possibly interrupted) run: pass --resume, or another --out")
        return
    if not (out / RUN_CONFIG).exists():
        raise NothingToResume(f"--resume: {out / RUN_CONFIG} not found; nothing to resume in {out}")
    if (out / CHECKPOINT_JSON).exists() and not saved_state:
        raise NothingToResume(f"--resume: {out} holds a finished checkpoint and no engine state; use another --out")
    if not saved_state:
        raise NothingToResume(f"--resume: the run in {out} stopped before its first engine save "
                              f"(no {ENGINE_DIR}/{LATEST}), so there is nothing to continue from; run the same command "
                              "without --resume to start it again in the same folder")
    saved = json.loads((out / RUN_CONFIG).read_text())["config"]
    defaults = {f.name: f.default for f in fields(TrainConfig)}  # a field newer than the run: its default then
    changed = sorted(k for k, v in cfg.to_dict().items()
                     if k not in RESUME_FREE and saved.get(k, defaults.get(k)) != v)
    if changed:
        was = ", ".join(f"{k}: {saved.get(k)!r} → {cfg.to_dict()[k]!r}" for k in changed)
        raise RefusedValue(f"--resume with changed options ({was}): the run would not continue the same training; "
                           "use the original options")


@contextlib.contextmanager
def out_lock(cfg: TrainConfig, rank: int):
    """Rank 0 holds `--out`'s run lock for the run; another run holding it is refused in one line (`OutBusy`)."""
    if rank != 0:
        yield
        return
    from infra.lock import RunLocked, run_lock

    try:
        with run_lock(cfg.out, RUN_LOCK, "vtl-train"):
            yield
    except RunLocked as err:
        raise OutBusy(str(err)) from None


def check_shards_location(shards: str) -> None:
    """The shard folder (local or s3:// / gs://) is there, said in one line (no credentials, missing bucket, ...)."""
    from infra.preflight import preflight
    from infra.storage import StorageError

    try:
        preflight(shards, what="--shards")
    except StorageError as err:
        raise RefusedValue(str(err)) from None


def check_shards(index: dict, world: int) -> None:
    shards = len(index.get("shards", []))
    if shards < world:
        raise RefusedValue(f"{shards} shards cannot feed {world} processes: write more, smaller shards "
                           "(build-qa --samples-per-shard) or use fewer processes")


def shards_digest(index: dict) -> str:
    """sha256 of what a shard set holds: each shard's name, sample count and sha256 (index.json), its encoder, width
    and manifest hash. Two shard sets with the same digest hold the same bytes."""
    shards = sorted((s.get("name"), s.get("samples"), s.get("sha256")) for s in index.get("shards", []))
    body = {"shards": shards, "encoder": index.get("encoder"), "dim": index.get("dim"),
            "manifest_hash": index.get("manifest_hash")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check_provenance(cfg: TrainConfig, index: dict) -> None:
    """The shards are those a resumed run trained on, and of the encoder and width a `--from` checkpoint knows."""
    if cfg.resume:
        saved = json.loads((Path(cfg.out) / RUN_CONFIG).read_text()).get("shards") or {}
        digest = shards_digest(index)
        if saved.get("digest") and saved["digest"] != digest:
            raise RefusedValue(f"--resume: the shards in {cfg.shards} are not those the run in {cfg.out} trained on "
                               f"(digest {digest[:12]} vs {saved['digest'][:12]}: a shard, the encoder or the "
                               "manifest changed); resume with the original shards, or start a new --out")
    if cfg.from_checkpoint:
        from train.checkpoint import read_checkpoint

        try:
            meta = read_checkpoint(cfg.from_checkpoint)
        except (FileNotFoundError, ValueError) as err:
            raise RefusedValue(f"--from: {err}") from None
        before, now = meta.get("encoder"), index.get("encoder")
        if before and now and before != now:
            raise RefusedValue(f"--from {cfg.from_checkpoint}: it was trained on features of encoder {before!r}, "
                               f"but --shards {cfg.shards} hold features of {now!r}; build the shards with the same "
                               "encoder settings")
        width, dim = meta.get("feature_dim"), index.get("dim")
        if width and dim and width != dim:
            raise RefusedValue(f"--from {cfg.from_checkpoint}: its projector takes {width}-d features, but --shards "
                               f"{cfg.shards} hold {dim}-d ones (another encoder); build the shards with the "
                               "checkpoint's encoder")


def check_from_spec(cfg: TrainConfig, index: dict) -> None:
    """`--from`: refuse shards whose feature spec (or, after stage 1, time format) differs from the checkpoint's."""
    if not cfg.from_checkpoint:
        return
    from train.checkpoint import check_spec, read_checkpoint

    try:
        check_spec(read_checkpoint(cfg.from_checkpoint), index, f"--shards {cfg.shards}")
    except (FileNotFoundError, ValueError) as err:
        raise RefusedValue(f"--from: {err}") from None


def check_llm(cfg: TrainConfig) -> None:
    """The LLM this run loads can be had (see the module docstring); a `--from` checkpoint must be one."""
    name = cfg.llm
    if cfg.from_checkpoint:
        from train.llm_source import read_checkpoint, resolve_llm_path

        try:
            meta = read_checkpoint(cfg.from_checkpoint)
            if meta["llm"].get("saved"):
                return  # the checkpoint carries its own LLM (stages.py says so when --llm names another)
            name = resolve_llm_path(meta, Path(cfg.from_checkpoint), cfg.llm)
        except (FileNotFoundError, ValueError) as err:
            raise RefusedValue(f"--from: {err}") from None
    if name == TINY_RANDOM:
        return
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RefusedValue(f"--llm {name}: the folder has no config.json, so it is not a Hugging Face model")
        return
    if path.exists() or looks_like_path(name):
        raise RefusedValue(f"--llm {name}: no such model folder")
    _check_hub_name(name)


def _check_hub_name(name: str) -> None:
    from train.llm_source import require_loadable

    require_loadable(name)
