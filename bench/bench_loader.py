"""Training-loader benchmark: vtl's streaming shard loader vs a VTimeLLM-style loader, same samples, same output.

The VTimeLLM-style loader keeps the whole training JSON list in memory, opens one `.npy` file per sample and
tokenizes each sample in `Dataset.__getitem__` (reference §2.4); its DataLoader workers collate tensors, which reach
the training process through shared memory. Ours streams WebDataset shards (train.data.loader.TrainLoader): a worker takes
each shard's samples as a token table (tokenized and located once, train.data.token_cache), collates the text, and sends
where each sample's features lie in its shard; the training process reads them into the batch. Same tokenizer,
format (`v1`), micro-batch and worker count; the first batch of ours is checked against the baseline's per-sample
processing of the same samples (identical ids, labels, mask and features), so the difference is the data layout and
the loader design, not the output.

Ours is measured twice: the first epoch, which builds the token tables (tokenizing as it goes, as every epoch of the
baseline does), and later epochs, which read them from the token cache (VTimeLLM's recipe trains 2 epochs in stages
2 and 3, and every later run with the same tokenizer reuses the tables).

Data: `--samples` synthetic samples, features (100, 768) float16, a multi-turn conversation each; generated once
into `--workdir` (reused when present). Each measurement runs in a fresh process (one epoch, samples/s and the peak
resident memory of the loader's process tree, sampled every 50 ms). "cold" evicts the dataset's files from the page
cache first (posix_fadvise DONTNEED on our own files only), as when the dataset is larger than RAM; "warm" reads
from the page cache. Memory is measured at two dataset sizes to show whether it grows with the dataset.
Every configuration runs `--repeat` times (rounds of all of them) and the median run is reported.
The last line is `ratio=X.XX`: samples/s of ours (token tables cached) over the VTimeLLM-style loader, full dataset,
cold page cache; there the disk's sequential read speed, printed too, bounds both loaders.

    .venv/bin/python bench/bench_loader.py --samples 20000 --workdir /tmp/vtl-bench-loader
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS, DIM, PER_SHARD, MICRO, WORKERS = 100, 768, 1000, 8, 2
WORDS = ("person walks dog river woman rides red bike past old bridge children play ball green grass near tall trees "
         "man opens door kitchen cooks pasta then washes dishes and leaves").split()


def conversation(rng: random.Random) -> list[dict]:
    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12)))

    a, b = sorted(rng.sample(range(100), 2))
    return [{"from": "human", "value": f"<video>\nWhat happened from {a:02d} to {b:02d} in the video?"},
            {"from": "gpt", "value": sentence() + "."},
            {"from": "human", "value": f"During which frames can we see {sentence()}?"},
            {"from": "gpt", "value": f"From {a:02d} to {b:02d}."}]


def generate(workdir: Path, n: int) -> None:
    """Both layouts of the same n samples: shards/ (+ index.json) and npy/ + train.json (VTimeLLM's layout)."""
    from pipeline.contract.shards import Sample, ShardWriter, write_index

    if (workdir / "done").exists() and json.loads((workdir / "done").read_text())["samples"] == n:
        return
    rng, gen = random.Random(0), np.random.default_rng(0)
    pool = [gen.standard_normal((ROWS, DIM)).astype(np.float16) for _ in range(32)]
    (workdir / "npy").mkdir(parents=True, exist_ok=True)
    records = []
    with ShardWriter(workdir / "shards", "train", samples_per_shard=PER_SHARD) as writer:
        for i in range(n):
            key, turns = f"v{i:07d}", conversation(rng)
            feats = pool[i % len(pool)].copy()
            feats[0, 0] = i  # distinct content per sample
            conv = {"turns": turns, "stage": 2, "form": "multi_turn", "templates": [], "seed": 0, "source": "build-qa"}
            writer.write(Sample(key, feats, {"key": key, "duration": 60.0}, conv))
            np.save(workdir / "npy" / f"{key}.npy", feats, allow_pickle=False)
            records.append({"id": key, "source": "synthetic", "conversations": turns, "meta": {"duration": 60.0}})
    write_index(workdir / "shards", writer.shards, encoder="synthetic", num_frames=ROWS, dim=DIM, manifest_hash=None)
    (workdir / "train.json").write_text(json.dumps(records))
    (workdir / "done").write_text(json.dumps({"samples": n}))


def subset(workdir: Path, n: int) -> None:
    """The first n samples in both layouts (shard symlinks + index, a shorter JSON list) for the memory-growth check."""
    from pipeline.contract.shards import ShardInfo, read_index, write_index

    out = workdir / f"subset{n}"
    if (out / "train.json").exists():
        return
    (out / "shards").mkdir(parents=True, exist_ok=True)
    infos = []
    for s in read_index(workdir / "shards")["shards"][: n // PER_SHARD]:
        link = out / "shards" / s["name"]
        if not link.exists():
            link.symlink_to(workdir / "shards" / s["name"])
        infos.append(ShardInfo(s["name"], s["samples"], s["bytes"], s["sha256"]))
    write_index(out / "shards", infos, encoder="synthetic", num_frames=ROWS, dim=DIM, manifest_hash=None)
    records = json.loads((workdir / "train.json").read_text())[:n]
    (out / "train.json").write_text(json.dumps(records))


def evict(paths) -> None:
    """Drop our own files from the page cache so the next read comes from disk."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class PeakRSS(threading.Thread):
    """Peak resident memory (bytes) of this process plus its children (the DataLoader workers)."""

    def __init__(self):
        super().__init__(daemon=True)
        import psutil

        self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                total = self.proc.memory_info().rss + sum(c.memory_info().rss for c in self.proc.children(True))
            except Exception:  # a worker exiting between listing and reading
                continue
            self.peak = max(self.peak, total)
            time.sleep(0.05)


def tokenizer():
    from train.model import prepare_tokenizer
    from train.tiny import train_tokenizer

    rng = random.Random(1)
    texts = [t["value"] for _ in range(200) for t in conversation(rng)]
    return prepare_tokenizer(train_tokenizer(texts, vocab_size=400))


def ours(data: Path, tok, cache: Path):
    from train.data.loader import TrainLoader

    ld = TrainLoader(data / "shards", tokenizer=tok, conv_format="v1", micro_batch=MICRO, max_tokens=4096,
                     num_workers=WORKERS, buffer=1000, seed=0, token_cache=cache)
    batches = ld.samples_per_epoch // MICRO
    for i, (batch, keys) in enumerate(ld, 1):
        if i == 1:
            first = batch, keys, ld.pad_id
        if i == batches:
            return batches * MICRO, first


def same_as_baseline(batch, keys, data: Path, tok, pad_id: int) -> None:
    """Our batch equals what the VTimeLLM-style per-sample path makes of the same samples."""
    import torch

    from train.data.loader import collate

    ds = JsonListDataset(data / "train.json", ROOT_DATA / "npy", tok)
    where = {rec["id"]: i for i, rec in enumerate(ds.records)}
    want = collate([ds[where[k]] for k in keys], pad_id)
    if batch.keys() != want.keys() or not all(torch.equal(batch[k], want[k]) for k in want):
        raise AssertionError(f"vtl's batch of {keys} differs from the baseline's processing of the same samples")


class JsonListDataset:
    """VTimeLLM's layout: the whole JSON list in memory, `{feat_folder}/{id}.npy` opened per sample."""

    def __init__(self, json_path: Path, feat_dir: Path, tok):
        self.records = json.loads(json_path.read_text())
        self.feat_dir, self.tok = feat_dir, tok

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        from pipeline.contract.conversation import encode

        rec = self.records[i]
        feats = np.load(self.feat_dir / f"{rec['id']}.npy", allow_pickle=False)
        enc = encode(rec["conversations"], self.tok, "v1")
        return {"input_ids": enc.input_ids, "labels": enc.labels, "features": feats}


def _collate(items):
    from train.data.loader import collate

    return collate(items, pad_id=0)


def baseline(data: Path, tok):
    import torch

    ds = JsonListDataset(data / "train.json", ROOT_DATA / "npy", tok)
    loader = torch.utils.data.DataLoader(ds, batch_size=MICRO, shuffle=True, num_workers=WORKERS,
                                         collate_fn=_collate, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    return sum(len(b["input_ids"]) for b in loader)


ROOT_DATA = Path()
CACHE = "token-cache"


def measure(which: str, data: Path) -> dict:
    tok = tokenizer()
    watch = PeakRSS()
    watch.start()
    t0 = time.perf_counter()
    n, first = ours(data, tok, ROOT_DATA / CACHE) if which == "ours" else (baseline(data, tok), None)
    seconds = time.perf_counter() - t0
    watch.stop.set()
    watch.join()
    if first is not None:  # outside the timed and memory-watched run
        same_as_baseline(*first[:2], data, tok, first[2])
    return {"loader": which, "samples": n, "seconds": round(seconds, 2), "samples_per_s": round(n / seconds, 1),
            "peak_rss_mb": round(watch.peak / 2 ** 20), "load_avg_1min": round(os.getloadavg()[0], 2)}


def run_one(which: str, data: Path, workdir: Path, cold: bool, fresh_tables: bool = False) -> dict:
    if fresh_tables:
        shutil.rmtree(workdir / CACHE, ignore_errors=True)
    if cold:
        files = list((workdir / "shards").glob("*.tar")) if which == "ours" else list((workdir / "npy").glob("*.npy"))
        evict(files)
    cmd = [sys.executable, __file__, "--measure", which, "--data", str(data), "--workdir", str(workdir)]
    res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    res.update(cache="cold" if cold else "warm", dataset=data.name)
    if which == "ours":
        res["token_tables"] = "built in this run" if fresh_tables else "read from the token cache"
    print(json.dumps(res), flush=True)
    return res


def median_run(rows: list[dict]) -> dict:
    """The run with the median samples/s (its own peak RSS goes with it)."""
    return sorted(rows, key=lambda r: r["samples_per_s"])[len(rows) // 2]


def disk_read_mb_s(workdir: Path) -> float:
    """Sequential read speed of the shard files from disk (first 5 shards, page cache evicted first)."""
    files = sorted((workdir / "shards").glob("*.tar"))[:5]
    evict(files)
    n, t0 = 0, time.perf_counter()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while chunk := fh.read(1 << 20):
                n += len(chunk)
    return n / (time.perf_counter() - t0) / 1e6


def main() -> None:
    global ROOT_DATA
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration; the median is reported")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vtl-bench-loader"))
    ap.add_argument("--measure", choices=["ours", "baseline"])
    ap.add_argument("--data", type=Path)
    args = ap.parse_args()
    ROOT_DATA = args.workdir
    if args.measure:
        print(json.dumps(measure(args.measure, args.data)))
        return
    t0 = time.perf_counter()
    generate(args.workdir, args.samples)
    small = max(PER_SHARD, args.samples // 4 // PER_SHARD * PER_SHARD)
    subset(args.workdir, small)
    print(f"data ready in {time.perf_counter() - t0:.0f} s: {args.samples} samples, features ({ROWS}, {DIM}) float16")
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.repeat):  # rounds of every configuration, so slow phases of a shared machine hit all alike
        runs.setdefault(("ours", "first"), []).append(
            run_one("ours", args.workdir, args.workdir, cold=False, fresh_tables=True))
        for cache in ("warm", "cold"):
            for which in ("baseline", "ours"):
                runs.setdefault((which, cache), []).append(
                    run_one(which, args.workdir, args.workdir, cold=cache == "cold"))
        for which in ("baseline", "ours"):
            runs.setdefault((which, "small"), []).append(
                run_one(which, args.workdir / f"subset{small}", args.workdir, cold=False))
    rows = {k: median_run(v) for k, v in runs.items()}
    print(f"medians of {args.repeat} runs each:")
    for (which, cache), row in rows.items():
        print(f"  {which:8s} {cache:5s} {row['samples_per_s']:9.1f} samples/s  peak RSS {row['peak_rss_mb']} MB")
    disk = disk_read_mb_s(args.workdir)
    print(f"disk: {disk:.0f} MB/s sequential, so at most {disk * 1e6 / (ROWS * DIM * 2):.0f} samples/s of features "
          f"from a cold page cache")
    first = rows[("ours", "first")]["samples_per_s"] / rows[("baseline", "warm")]["samples_per_s"]
    print(f"first-epoch ratio={first:.2f} (token tables built during the epoch, warm page cache)")
    warm = rows[("ours", "warm")]["samples_per_s"] / rows[("baseline", "warm")]["samples_per_s"]
    print(f"warm-cache ratio={warm:.2f}")
    for which in ("baseline", "ours"):
        grow = rows[(which, "warm")]["peak_rss_mb"] - rows[(which, "small")]["peak_rss_mb"]
        print(f"{which}: peak RSS {rows[(which, 'small')]['peak_rss_mb']} MB at {small} samples, "
              f"{rows[(which, 'warm')]['peak_rss_mb']} MB at {args.samples} ({grow:+d} MB)")
    cold = rows[("ours", "cold")]["samples_per_s"] / rows[("baseline", "cold")]["samples_per_s"]
    print(f"ratio={cold:.2f}")


if __name__ == "__main__":
    main()
