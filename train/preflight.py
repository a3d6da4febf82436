"""Checks `vtl-train` makes before it builds anything, so a refusal takes a second, not a model load.

- `--out`: a new run refuses a folder holding a checkpoint or an interrupted run; `--resume` needs a saved engine state
  and the same options (those in RESUME_FREE may change).
- `--shards`: a reachable location (an object store's credentials, endpoint and bucket checked in one request) with
  at least as many shards as processes.
- `--from`: its checkpoint was trained on features of the spec `--shards` has (pipeline.contract.feature_spec), and,
  after stage 1, on the same time format.
- `--llm` (or the LLM a `--from` checkpoint continues from): `tiny-random`, a local model folder, or a hub name that
  can be had: with the hub offline (HF_HUB_OFFLINE) it must be in the local cache, and an unreachable hub is said in
  three seconds instead of transformers' minute of retries ending in "Repo id must be in the form ...".
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import fields
from pathlib import Path
from urllib.parse import urlsplit

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
    from train.checkpoint import CHECKPOINT_JSON

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
        from train.checkpoint import read_checkpoint, resolve_llm_path

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
    if path.exists() or _looks_like_path(name):
        raise RefusedValue(f"--llm {name}: no such model folder")
    _check_hub_name(name)


def _looks_like_path(name: str) -> bool:
    """A hub id is `name` or `org/name`; anything with more parts, or starting like a path, is a missing folder."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _check_hub_name(name: str) -> None:
    from huggingface_hub import constants, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    if constants.HF_HUB_OFFLINE:
        if not cached:
            raise RefusedValue(f"--llm {name}: not a local folder, and the hub is offline (HF_HUB_OFFLINE) with no "
                               "cached copy of it; pass the model's local folder")
        return
    if cached:
        return
    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=float(os.environ.get("VTL_HUB_PROBE_TIMEOUT", 3))).close()
    except OSError as err:
        raise RefusedValue(f"--llm {name}: not a local folder, not in the hub cache, and {host} cannot be reached "
                           f"({err}); pass the model's local folder") from None
