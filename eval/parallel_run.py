"""The data-parallel generation job of `vtl-eval grounding|dvc` (the rules are eval.parallel's docstring):
join the process group, answer this rank's unanswered queries into its rank file, wait for every rank, and on
rank 0 merge the rank files into `predictions.jsonl`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from eval.config import EvalConfig, resolve_device
from eval.parallel import (
    DONE_FILE,
    POLL_S,
    RANK_FILE,
    SETTINGS_FILE,
    SLICE_BATCHES,
    World,
    answered,
    barrier,
    check_settings,
    count_answered,
    cut_torn_tail,
    init_group,
    merge,
    owner,
    wait_for_ranks,
)
from infra.storage import fsync_file


def check_parallel_out(cfg: EvalConfig) -> None:
    """The ranks meet in `--out`: it must be a folder they all see (an object-store URL is not one)."""
    if not isinstance(cfg.out, Path):
        raise ValueError(f"--out {cfg.out}: a data-parallel run writes its rank files into a local or "
                         "shared-filesystem folder every rank sees; give one (copy the results to the store after)")


def _device(cfg: EvalConfig, world: World) -> tuple[str, object]:
    device, dtype = resolve_device(cfg.device, cfg.dtype)
    return (f"cuda:{world.local_rank}" if device == "cuda" else device), dtype


def _settings(cfg: EvalConfig, device: str) -> dict:
    """What an answer depends on (the batch size and --limit do not change a greedy answer)."""
    return {"benchmark": cfg.benchmark, "checkpoint": str(cfg.checkpoint), "shards": str(cfg.shards), "llm": cfg.llm,
            "max_new_tokens": cfg.max_new_tokens, "conv_format": cfg.conv_format, "dtype": cfg.dtype,
            "device": device.split(":")[0]}


def _slices(items: list, size: int) -> list[list]:
    """Whole samples, about `size` queries a slice (a sample's queries share one prefix in the generator)."""
    out: list[list] = [[]]
    for i, it in enumerate(items):
        if len(out[-1]) >= size and it.key != items[i - 1].key:
            out.append([])
        out[-1].append(it)
    return [s for s in out if s]


class _Progress:
    """Rank 0's bar over all ranks: the total from the whole stream, the count from every rank file."""

    def __init__(self, cfg: EvalConfig, world: World, console):
        from eval.progress import QueryBar

        self.out, self.last = cfg.out, 0.0
        self.bar = QueryBar(console, f"generating ({cfg.benchmark}, {world.size} ranks)", cfg.shards, cfg.limit) \
            if world.rank == 0 else None

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)

    def chunk(self, queries: int, samples: int) -> None:
        if self.bar:
            self.bar.chunk(queries, samples)

    def count(self, n: int | None = None, force: bool = False) -> None:
        if self.bar and (force or time.monotonic() - self.last >= POLL_S):
            self.bar.set_done(count_answered(self.out) if n is None else n)
            self.last = time.monotonic()


def _answer_mine(cfg: EvalConfig, world: World, model, progress: _Progress) -> tuple[list, dict, int]:
    """Stream every chunk (the order and ground truth of all queries), answer this rank's unanswered ones."""
    from eval.runner import _answer, _prediction_line, iter_eval_chunks

    done = set(answered(cfg.out))
    order: list[tuple[str, str]] = []
    truth: dict = {}
    numbers: dict[str, int] = {}
    new = 0
    with open(cfg.out / RANK_FILE.format(rank=world.rank), "a", encoding="utf-8") as f:
        for items, chunk_truth in iter_eval_chunks(cfg.shards, cfg.benchmark, cfg.limit):
            progress.chunk(len(items), len(chunk_truth))
            truth.update(chunk_truth)
            for it in items:
                numbers.setdefault(it.key, len(numbers))
                order.append((it.key, it.query_id))
            mine = [it for it in items if owner(numbers[it.key], world.size) == world.rank
                    and (it.key, it.query_id) not in done]
            for part in _slices(mine, cfg.batch_size * SLICE_BATCHES):
                answers = _answer(model, cfg, part, None)
                f.writelines(json.dumps(_prediction_line(it, a), ensure_ascii=False) + "\n"
                             for it, a in zip(part, answers))
                f.flush()  # a kill loses only the slice in flight
                new += len(part)
                progress.count()
        fsync_file(f)
    return order, truth, new


def generate_parallel(cfg: EvalConfig, world: World, console=None) -> tuple[list[dict], dict, dict] | None:
    """This rank's share of the queries; on rank 0 (after every rank is done) the merged prediction lines, the
    ground truth and timing, as `eval.runner.generate_predictions` returns them; None on the other ranks."""
    from eval.runner import PREDICTIONS, load_eval_model
    from infra.storage import write_bytes_atomic, write_json_atomic

    device, dtype = _device(cfg, world)
    cfg.out.mkdir(parents=True, exist_ok=True)
    settings = _settings(cfg, device)
    check_settings(cfg.out, settings)
    (cfg.out / DONE_FILE.format(rank=world.rank)).unlink(missing_ok=True)
    cut_torn_tail(cfg.out / RANK_FILE.format(rank=world.rank))
    init_group(world, device)
    barrier(world, device)  # every stale done marker is gone before rank 0 looks for markers
    if world.rank == 0:
        write_json_atomic(cfg.out / SETTINGS_FILE, settings)
    model = load_eval_model(cfg, device, dtype)
    start = time.perf_counter()
    with _Progress(cfg, world, console) as progress:
        order, truth, new = _answer_mine(cfg, world, model, progress)
        (cfg.out / DONE_FILE.format(rank=world.rank)).touch()
        if world.rank == 0:
            wait_for_ranks(cfg.out, world, lambda n: progress.count(n, force=True))
    barrier(world, device)
    _leave_group()
    print(f"rank {world.rank}/{world.size}: answered {new} queries in this run", flush=True)
    if world.rank != 0:
        return None
    lines = merge(cfg.out, order)
    write_bytes_atomic(cfg.out / PREDICTIONS,
                       "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode("utf-8"))
    seconds = time.perf_counter() - start
    return lines, truth, {"device": device, "dtype": str(dtype).removeprefix("torch."), "seconds": round(seconds, 3),
                          "world_size": world.size, "answered_this_run_rank0": new,
                          "conv_format": model.conv_format}


def _leave_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def run_eval_parallel(cfg: EvalConfig, world: World, console=None) -> dict | None:
    """`vtl-eval grounding|dvc` as one rank of a launch: on rank 0 the metrics, on the other ranks None."""
    from eval.runner import finish_eval

    check_parallel_out(cfg)
    result = generate_parallel(cfg, world, console)
    return None if result is None else finish_eval(cfg, *result)
