"""Streaming training data: shards → split by rank and worker → shuffle buffer → length-grouped padded micro-batches.

Each epoch has its own shard order (seeded); rank r takes shards r, r+W, ... of it, and DataLoader worker w of that
rank takes every k-th of those. A worker reads its shards one after the other through a shuffle buffer, so memory is
bounded by the buffer and one shard's token table, never by the dataset. Workers cycle through epochs on their own;
the trainer decides how many steps make an epoch (from index.json) and when to stop.

Micro-batches are grouped by length within windows of ~50 micro-batches of the stream, in shuffled order
(train.data.grouping); `group_by_length=False` batches the stream as it comes.

Exact resume: the order a worker yields is a pure function of (seed, epoch, rank, worker, shard sizes)
(train.data.shuffle, train.data.grouping). The loader position saved in a checkpoint is, per worker, where its current
window starts (epoch, positions consumed, samples skipped) and how many of the window's micro-batches it handed out; a
resumed worker replays the position order without reading anything, reads its window again and skips those. The DataLoader hands out items round-robin over its
workers; on resume the worker roles are rotated so the next item comes from the same worker as it would have without
the interruption. Together a resumed run sees exactly the samples, in exactly the order, of an uninterrupted one
(tests compare the loss sequences).

Samples longer than `max_tokens` (text tokens + feature rows) are skipped and counted, never truncated.

Per-sample cost is what bounds a loader on few cores. A worker takes each shard's samples as a token table
(train.data.token_cache): tokenized and located once, then read back from the token cache in later epochs and runs. The
feature arrays are never decoded in the workers: a batch travels to the training process as small numpy arrays plus
each sample's feature location, and the training process copies the features from the page cache straight into the
batch tensor (no shared-memory segment per batch).
"""
from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from infra import storage
from pipeline.contract.shard_refs import FeatureRef, read_features_into
from pipeline.contract.shards import read_index
from pipeline.contract.conversation import IGNORE_INDEX, VIDEO_TOKEN_INDEX
from train.data.grouping import WINDOW_BATCHES, Peekable, group_window, sample_length, take_window, window_seed
from train.data.shuffle import ShuffleOrder, ordered_stream
from train.data.token_cache import ShardTable, TokenCache, load_table, tokenizer_fingerprint
from train.data.workers import die_with_parent
from train.errors import RefusedValue


@dataclass(frozen=True)
class Shard:
    path: str
    samples: int
    sha256: str = ""


def index_shards(shard_dir: str | Path) -> list[Shard]:
    """The shards listed in index.json (written last by the producer, so its presence means the set is complete)."""
    index = read_index(shard_dir)
    shards = [Shard(storage.join(shard_dir, s["name"]), int(s["samples"]), s.get("sha256", ""))
              for s in index["shards"]]
    if not shards:
        raise ValueError(f"{shard_dir}: index.json lists no shards")
    return shards


def epoch_order(shards: list[Shard], epoch: int, seed: int) -> list[Shard]:
    """This epoch's shard order: the same on every rank (same seed), different from epoch to epoch."""
    order = list(shards)
    random.Random(f"shards/{seed}/{epoch}").shuffle(order)
    return order


def worker_shards(shards: list[Shard], rank: int, world: int, worker: int, workers: int) -> list[Shard]:
    """Split by node (rank), then by DataLoader worker: disjoint subsets that together cover every shard."""
    return shards[rank::world][worker::workers]


def usable_workers(num_shards: int, world: int, requested: int) -> int:
    """Worker count such that every worker of every rank owns ≥ 1 shard (an empty worker would never yield)."""
    if num_shards < world:
        raise ValueError(f"{num_shards} shards cannot feed {world} ranks: write more, smaller shards "
                         f"(build-qa --samples-per-shard) or use fewer processes")
    return max(1, min(requested, num_shards // world))


class ShardStream(IterableDataset):
    """One rank's endless stream of micro-batches; each says which worker made it and how far that worker got.

    Workers collate their own micro-batches, so the trainer receives one small message per batch: padded ids/labels
    as numpy arrays and, instead of the features, where each sample's features lie in its shard (`FeatureRef`).
    `TrainLoader` reads those straight into the batch tensor: feature bytes go page cache → batch once, never
    through the worker or inter-process shared memory.
    """

    def __init__(self, shards: list[Shard], *, rank: int, world: int, workers: int, buffer: int, seed: int,
                 tokenizer, conv_format: str, max_tokens: int, micro_batch: int, pad_id: int,
                 cache: TokenCache | None = None, state: dict | None = None, group_by_length: bool = True,
                 window_batches: int = WINDOW_BATCHES):
        self.shards, self.rank, self.world, self.workers = shards, rank, world, workers
        self.buffer, self.seed, self.max_tokens = buffer, seed, max_tokens
        self.tokenizer, self.fmt, self.cache = tokenizer, conv_format, cache
        self.micro_batch, self.pad_id, self.state = micro_batch, pad_id, state
        self.window = micro_batch * (window_batches if group_by_length else 1)
        self.group_by_length = group_by_length

    def __iter__(self) -> Iterator[dict]:
        """Micro-batches window by window (train.data.grouping); `position` is where a resumed worker restarts:
        the start of the current window and how many of its micro-batches were handed out."""
        info = get_worker_info()
        rotation = self.state["next_worker"] if self.state else 0
        worker = ((info.id if info is not None else 0) + rotation) % self.workers
        pos = dict(self.state["workers"][worker]) if self.state else {"epoch": 0, "consumed": 0, "skipped": 0}
        done = pos.pop("batches", 0)
        stream = Peekable(self.samples(worker, pos))
        while True:
            items = take_window(stream, self.window, self.micro_batch)
            batches = [list(range(len(items)))]
            if self.group_by_length:
                rng = window_seed(self.seed, self.rank, worker, pos["epoch"], pos["consumed"])
                batches = group_window([sample_length(it) for it in items], [it["epoch"] for it in items],
                                       self.micro_batch, rng)
            end = {k: items[-1][k] for k in ("epoch", "consumed", "skipped")}
            for j in range(done, len(batches)):
                chosen = [items[i] for i in batches[j]]
                position = {**end, "batches": 0} if j + 1 == len(batches) else {**pos, "batches": j + 1}
                yield {"batch": collate_text(chosen, self.pad_id), "refs": [it["features"] for it in chosen],
                       "keys": [it["key"] for it in chosen], "worker": worker, "position": position,
                       "epoch": end["epoch"], "skipped": end["skipped"]}
            pos, done = end, 0

    def table(self, shard: Shard) -> ShardTable:
        return load_table(shard.path, shard.sha256, self.tokenizer, self.fmt, self.cache)

    def samples(self, worker: int, pos: dict) -> Iterator[dict]:
        """This worker's tokenized samples, epoch after epoch, from position `pos` on."""
        epoch, consumed, skipped = pos["epoch"], pos["consumed"], pos["skipped"]
        while True:
            order = epoch_order(self.shards, epoch, self.seed)
            mine = worker_shards(order, self.rank, self.world, worker, self.workers)
            rng = random.Random(f"buffer/{self.seed}/{epoch}/{self.rank}/{worker}")
            yielded, started_at = 0, consumed
            for _, item in ordered_stream(mine, self.buffer, rng, consumed, self.table):
                consumed += 1
                if sample_length(item) > self.max_tokens:
                    skipped += 1
                    continue
                yielded += 1
                item.update(epoch=epoch, consumed=consumed, skipped=skipped)
                yield item
            if not yielded and started_at == 0:
                raise RefusedValue(f"rank {self.rank} worker {worker}: no sample of {[s.path for s in mine]} fits "
                                   f"max_tokens={self.max_tokens} (raise --max-tokens)")
            epoch, consumed = epoch + 1, 0


def _pad_text(items: list[dict], pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded input_ids / attention_mask / labels (int64, B × longest)."""
    lengths = np.array([len(it["input_ids"]) for it in items], dtype=np.int64)
    mask = np.arange(lengths.max())[None, :] < lengths[:, None]
    input_ids = np.full(mask.shape, pad_id, dtype=np.int64)
    labels = np.full(mask.shape, IGNORE_INDEX, dtype=np.int64)
    input_ids[mask] = np.concatenate([it["input_ids"] for it in items])  # row-major: each sample's ids in turn
    labels[mask] = np.concatenate([it["labels"] for it in items])
    return {"input_ids": input_ids, "attention_mask": mask.astype(np.int64), "labels": labels}


def collate_text(items: list[dict], pad_id: int) -> dict[str, np.ndarray]:
    """The text half of a micro-batch (numpy, cheap to send between processes) and each sample's feature rows."""
    out = _pad_text(items, pad_id)
    out["num_features"] = np.array([it["features"].shape[0] for it in items], dtype=np.int64)
    return out


def with_features(batch: dict[str, np.ndarray], refs: list[FeatureRef]) -> dict[str, torch.Tensor]:
    """A collated text batch + its FeatureRefs → the tensors `collate` makes (features read from the shards)."""
    out = {k: torch.from_numpy(v) for k, v in batch.items()}
    rows = int(batch["num_features"].max())
    features = torch.empty((len(refs), rows, refs[0].shape[1]), dtype=torch.float16)
    read_features_into(refs, features.numpy())
    for i, n in enumerate(batch["num_features"].tolist()):
        if n < rows:
            features[i, n:] = 0
    out["features"] = features
    return out


def collate(items: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids/mask/labels and zero-padded features (B, Nmax, D) with each sample's row count."""
    out = {k: torch.from_numpy(v) for k, v in _pad_text(items, pad_id).items()}
    rows = max(len(it["features"]) for it in items)
    features = torch.zeros((len(items), rows, items[0]["features"].shape[1]), dtype=torch.float16)
    for i, it in enumerate(items):
        features[i, : len(it["features"])] = torch.from_numpy(np.asarray(it["features"], dtype=np.float16))
    out["features"] = features
    out["num_features"] = torch.tensor([len(it["features"]) for it in items], dtype=torch.long)
    return out


def _identity(item):
    return item


class TrainLoader:
    """Micro-batches for one rank, and the loader position to save with a checkpoint (`state_dict`).

    `token_cache`: folder for the shards' token tables (train.data.token_cache); None tokenizes every epoch.
    `group_by_length`: micro-batches grouped by length within windows of `window_batches` (train.data.grouping);
    off, each micro-batch is the next `micro_batch` samples of the shuffled stream.
    """

    def __init__(self, shard_dir: str | Path, *, tokenizer, conv_format: str, micro_batch: int, max_tokens: int,
                 rank: int = 0, world: int = 1, num_workers: int = 2, buffer: int = 1000, seed: int = 0,
                 token_cache: str | Path | None = None, state: dict | None = None, group_by_length: bool = True,
                 window_batches: int = WINDOW_BATCHES):
        self.shards = index_shards(shard_dir)
        self.samples_per_epoch = sum(s.samples for s in self.shards)
        workers = usable_workers(len(self.shards), world, max(num_workers, 1))
        self.window = micro_batch * (window_batches if group_by_length else 1)
        if state is not None:
            _check_state(state, workers, world, rank, self.window, micro_batch)
        self.micro_batch, self.rank, self.world, self.workers = micro_batch, rank, world, workers
        self.pad_id = _pad_id(tokenizer)
        cache = (TokenCache(str(token_cache), tokenizer_fingerprint(tokenizer), conv_format)
                 if token_cache is not None else None)
        self.dataset = ShardStream(self.shards, rank=rank, world=world, workers=workers, buffer=buffer, seed=seed,
                                   tokenizer=tokenizer, conv_format=conv_format, max_tokens=max_tokens,
                                   micro_batch=micro_batch, pad_id=self.pad_id, cache=cache, state=state,
                                   group_by_length=group_by_length, window_batches=window_batches)
        # With num_workers=0 one logical worker runs in this process; otherwise one process per logical worker.
        # batch_size=None: the workers batch; the DataLoader hands their batches out round-robin, in order.
        # Its own generator: starting an iterator draws a seed from it, which must not shift the global RNG that
        # dropout uses (a resumed run restores that RNG and must see the same dropout masks).
        self.loader = DataLoader(self.dataset, batch_size=None, collate_fn=_identity,
                                 num_workers=workers if num_workers > 0 else 0,
                                 generator=torch.Generator().manual_seed(seed),
                                 persistent_workers=False, prefetch_factor=4 if num_workers > 0 else None,
                                 worker_init_fn=functools.partial(die_with_parent, os.getpid()))
        self._positions = dict(enumerate(state["workers"])) if state else {}
        self._progress = {w: (p["epoch"], p["skipped"]) for w, p in self._positions.items()}
        self._next_worker = state["next_worker"] if state else 0
        self.samples = state["samples"] if state else 0

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], list[str]]]:
        """(batch, keys) pairs, forever; the position advances as batches are handed out."""
        for out in self.loader:
            self._positions[out["worker"]] = out["position"]
            self._progress[out["worker"]] = (out["epoch"], out["skipped"])  # as far as the worker has read
            self._next_worker = (out["worker"] + 1) % self.workers
            self.samples += len(out["keys"])
            yield with_features(out["batch"], out["refs"]), out["keys"]

    @property
    def skipped_long(self) -> int:
        return sum(skipped for _, skipped in self._progress.values())

    @property
    def epoch(self) -> int:
        return min((epoch for epoch, _ in self._progress.values()), default=0)

    def state_dict(self) -> dict:
        blank = {"epoch": 0, "consumed": 0, "skipped": 0, "batches": 0}
        return {"rank": self.rank, "world": self.world, "num_workers": self.workers, "next_worker": self._next_worker,
                "window": self.window,
                "samples": self.samples, "workers": [self._positions.get(w, blank) for w in range(self.workers)]}


def _check_state(state: dict, workers: int, world: int, rank: int, window: int, micro_batch: int) -> None:
    if (state["num_workers"], state["world"], state["rank"]) != (workers, world, rank):
        raise ValueError(f"saved loader position is for rank {state['rank']} of {state['world']} with "
                         f"{state['num_workers']} workers; this run is rank {rank} of {world} with {workers}: "
                         f"resume with the same number of processes and --num-workers")
    saved = state.get("window", micro_batch)  # positions saved before grouping existed: one micro-batch each
    if saved != window:
        raise ValueError(f"saved loader position is for grouping windows of {saved} samples, this run uses {window}: "
                         "resume with the same --micro-batch and --group-by-length setting")


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        raise ValueError("tokenizer has no pad, unk or eos token to pad with")
    return pad


__all__ = ["TrainLoader", "ShardStream", "ShuffleOrder", "ordered_stream", "collate", "collate_text", "with_features",
           "index_shards", "epoch_order", "worker_shards", "VIDEO_TOKEN_INDEX"]
