"""Data-parallel `vtl-eval grounding|dvc`: one process per GPU under `torchrun` or the deepspeed launcher.

The ranks come from the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK). Every rank streams the same shards;
sample number s (in shard order) belongs to rank s mod WORLD_SIZE, so the split is fixed by the shards alone and the
queries of one video stay on one rank (the batched generator shares their video prefix). Each rank appends its
answers to `predictions.rank{R}.jsonl` in `--out` (a folder every rank sees: local disk on one machine, a shared
filesystem across machines), a few batches at a time, flushed, so a killed run loses at most the batches in flight.
A rerun skips every query some rank file already answers (whatever the world size was), after cutting a torn last
line; `predictions.ranks.json` records what the answers depend on, and a rerun with other settings is refused.

Rank 0 draws the progress bar over all ranks (the answered lines of every rank file, polled) and, once every rank
has written `predictions.rank{R}.done` and passed the closing barrier (gloo on CPU, nccl on GPU), merges the rank
files in query order into `predictions.jsonl` and scores once. The rank files stay: they are the resume state.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

RANK_FILE = "predictions.rank{rank}.jsonl"
DONE_FILE = "predictions.rank{rank}.done"
SETTINGS_FILE = "predictions.ranks.json"
BARRIER_TIMEOUT = timedelta(hours=48)
"""The closing barrier waits for the slowest rank: a rank that finishes early waits there for hours, not minutes."""
SLICE_BATCHES = 4
"""Batches answered between two appends to a rank file (the work a kill can lose)."""
POLL_S = 2.0


@dataclass(frozen=True)
class World:
    """This process's place among the launcher's processes."""

    rank: int
    size: int
    local_rank: int


def world_from_env(env: dict | None = None) -> World:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun and the deepspeed launcher set them; a bare run is rank 0 of 1."""
    env = os.environ if env is None else env
    try:
        w = World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
    except ValueError:
        raise ValueError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers, got {env.get('RANK')!r}/"
                         f"{env.get('WORLD_SIZE')!r}/{env.get('LOCAL_RANK')!r}") from None
    if w.size < 1 or not 0 <= w.rank < w.size:
        raise ValueError(f"RANK {w.rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE {w.size})")
    return w


def owner(sample_number: int, size: int) -> int:
    """The rank that answers sample number `sample_number` (0-based, in shard order)."""
    return sample_number % size


def read_answered(path: Path) -> list[dict]:
    """The complete lines of a rank file; a torn last line (a kill mid-write) is left out."""
    if not path.exists():
        return []
    out = []
    for text in path.read_text(encoding="utf-8").split("\n")[:-1]:  # the piece after the last newline is torn
        try:
            out.append(json.loads(text))
        except json.JSONDecodeError:
            continue  # a torn line followed by a resumed append: that query is answered again
    return out


def cut_torn_tail(path: Path) -> None:
    """Drop the bytes after the last newline of `path`, so appends start on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)


def rank_files(out: Path) -> list[Path]:
    """Every rank file in `out` (a rerun with another world size reads the old ones too)."""
    return sorted(out.glob(RANK_FILE.format(rank="*")))


def answered(out: Path) -> dict[tuple[str, str], dict]:
    """(sample key, query id) → prediction line, over every rank file (the first answer of a query wins)."""
    lines: dict[tuple[str, str], dict] = {}
    for path in rank_files(out):
        for line in read_answered(path):
            lines.setdefault((line["key"], line["id"]), line)
    return lines


def merge(out: Path, order: list[tuple[str, str]]) -> list[dict]:
    """The prediction lines of `order` (sample key, query id) from the rank files, in that order."""
    lines = answered(out)
    missing = [q for q in order if q not in lines]
    if missing:
        raise ValueError(f"{out}: {len(missing)} queries have no answer in the rank files (first: sample "
                         f"{missing[0][0]}, query {missing[0][1]}); rerun the same command to answer them")
    return [lines[q] for q in order]


def check_settings(out: Path, settings: dict) -> None:
    """Refuse to resume rank files made with other settings (their answers would be mixed with these)."""
    path = out / SETTINGS_FILE
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(f"{out} holds rank files made with other settings ({', '.join(diff)}); use another "
                             f"--out or delete {RANK_FILE.format(rank='*')} and {SETTINGS_FILE} there")


def count_answered(out: Path) -> int:
    """Lines written so far over all rank files (the progress bar's count; a torn line is not counted)."""
    total = 0
    for path in rank_files(out):
        with open(path, "rb") as f:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return total


def init_group(world: World, device: str) -> None:
    """Join the launcher's process group: nccl when this rank runs on a GPU, else gloo."""
    import torch
    import torch.distributed as dist

    gpu = device.startswith("cuda")
    if gpu:
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if gpu else "gloo", rank=world.rank, world_size=world.size,
                            timeout=BARRIER_TIMEOUT)


def barrier(world: World, device: str) -> None:
    import torch.distributed as dist

    if device.startswith("cuda"):
        dist.barrier(device_ids=[world.local_rank])
    else:
        dist.barrier()


def wait_for_ranks(out: Path, world: World, on_count=None) -> None:
    """Rank 0: poll until every rank's done marker exists, reporting the answered count as it grows."""
    while True:
        if on_count is not None:
            on_count(count_answered(out))
        if all((out / DONE_FILE.format(rank=r)).exists() for r in range(world.size)):
            return
        time.sleep(POLL_S)
