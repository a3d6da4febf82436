"""Time per item and peak RSS of vtl's per-input steps at growing sizes: does memory stay flat when the input grows?

    python bench/bench_scale.py [--sizes 10000 100000 1000000] [--steps ...] [--out docs/benchmarks.md]

Synthetic inputs with the real field names (InternVid-10M-FLT JSONL, LCS-558K JSON, VTimeLLM's stage-2 JSON). Each
step runs in a fresh subprocess per size; its peak RSS is that child's `ru_maxrss`, so one size never inherits
another's heap. `growth(step, small, large)` is what the test suite calls at 1k vs 10k rows.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(os.environ.get("VTL_BENCH_ROOT") or Path(__file__).resolve().parents[1])
"""The checkout measured (VTL_BENCH_ROOT: another one, e.g. to compare with a previous version)."""

CHILD = """
import resource, sys, time
sys.path.insert(0, {root!r})
step, path, out, warm = sys.argv[1:5]
# The step runs once on a few items first, so `base` (ru_maxrss before the measured input is read) is the interpreter,
# its libraries and their caches; what the step holds for its input is the peak above it.
import numpy, pyarrow, pyarrow.parquet  # noqa: F401
from manifests.build import ManifestConfig, build_manifest
from pipeline.qa.import_vtimellm import ImportConfig, run_import
from eval.config import ScoreConfig
from eval.runner import run_score
import eval.figures, matplotlib.pyplot  # noqa: F401


def run(path, out):
    if step in ("manifest-internvid", "manifest-lcc"):
        build_manifest(ManifestConfig(step.split("-")[1], path, out + "/m.parquet"), {{}})
    elif step == "import-vtimellm":
        run_import(ImportConfig(json=path, features_dir=out + "/feats", out=out + "/shards", stage=2, progress=False))
    elif step == "eval-score":
        run_score(ScoreConfig(benchmark="grounding", predictions=path, annotations=out + "/sta.txt",
                              durations=out + "/lengths.csv", dataset="charades", out=out + "/score"))


run(warm + "/" + path.rsplit("/", 1)[1], warm)  # a few items first: what a step imports or caches on first use
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
run(path, out)
dt = time.perf_counter() - t0
print(dt, base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_internvid(path: Path, n: int) -> None:
    """n clips, 4 per video, contiguous (as InternVid lists them)."""
    with open(path, "w") as f:
        for i in range(n):
            vid, k = f"yt{i // 4:09d}", i % 4
            f.write(json.dumps({"YoutubeID": vid, "Start_timestamp": f"00:00:{10 * k:02d}.000",
                                "End_timestamp": f"00:00:{10 * k + 8:02d}.500", "Caption": f"a person does thing {i}",
                                "Aesthetic_Score": 4.5, "UMT_Score": 0.4}) + "\n")


def write_lcc(path: Path, n: int) -> None:
    with open(path, "w") as f:
        f.write("[")
        for i in range(n):
            f.write(("," if i else "") + json.dumps({"id": f"{i:09d}", "image": f"{i // 10000:05d}/{i:09d}.jpg",
                                                   "conversations": [{"from": "human", "value": "<image>\nDescribe."},
                                                                     {"from": "gpt", "value": f"a photo {i}"}]}))
        f.write("]")


def write_vtimellm(path: Path, n: int) -> None:
    with open(path, "w") as f:
        f.write("[")
        for i in range(n):
            rec = {"id": f"v_{i:09d}", "meta": {"duration": 60.0, "token": {"<s0>": 1.0, "<e0>": 9.0}},
                   "conversations": [{"from": "human", "value": "<video>\nWhen does <s0> happen?"},
                                     {"from": "gpt", "value": "From <s0> to <e0>."}]}
            f.write(("," if i else "") + json.dumps(rec))
        f.write("]")


def write_grounding(path: Path, n: int) -> None:
    """n grounding predictions (VTimeLLM answers), and beside them the Charades-STA annotations they answer (4 queries
    a video) with the durations CSV: the ground truth grows with the predictions, as a real benchmark's does."""
    with open(path, "w") as pred, open(path.with_name("sta.txt"), "w") as sta, \
            open(path.with_name("lengths.csv"), "w") as csv:
        csv.write("id,length\n")
        for i in range(n):
            vid, k = f"V{i // 4:08d}", i % 4
            if k == 0:
                csv.write(f"{vid},30.0\n")
            sta.write(f"{vid} {5.0 * k:.1f} {5.0 * k + 6:.1f}##a person does thing {k} number {i}.\n")
            pred.write(json.dumps({"video": vid, "query": f"During which frames can we see a person does thing {k} "
                                   f"number {i}?", "answer": f"From {15 * k:02d} to {15 * k + 25:02d}."}) + "\n")


WRITERS = {"manifest-internvid": (write_internvid, "jsonl"), "manifest-lcc": (write_lcc, "json"),
           "import-vtimellm": (write_vtimellm, "json"), "eval-score": (write_grounding, "jsonl")}
STEPS = tuple(WRITERS)
WARM_UP = 40
"""Items of the first, unmeasured run in each child."""


def measure(step: str, n: int) -> tuple[float, int, int]:
    """(seconds per item, peak RSS, peak RSS above the process after a warm-up run on a few items; bytes) of one step over n synthetic
    items, in a fresh subprocess."""
    write, ext = WRITERS[step]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / f"in.{ext}"
        write(data, n)
        os.makedirs(Path(tmp) / "warm" / "feats")
        write(Path(tmp) / "warm" / data.name, WARM_UP)
        os.makedirs(Path(tmp) / "feats")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}
        out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), step, str(data), tmp,
                              str(Path(tmp) / "warm")],
                             capture_output=True, text=True, env=env, timeout=3600)
        if out.returncode:
            raise RuntimeError(f"{step} at {n}: {out.stderr[-2000:]}")
        seconds, base, peak = out.stdout.split()[-3:]
        return float(seconds) / n, int(peak) * 1024, (int(peak) - int(base)) * 1024


def growth(step: str, small: int, large: int) -> float:
    """Peak RSS above the warm-up at `large` items over the same at `small` (what the test suite checks): start-up
    (~100 MiB of interpreter and libraries) would hide a whole-file reader at test sizes."""
    return measure(step, large)[2] / max(measure(step, small)[2], 1 << 20)


def table(sizes: list[int], steps=STEPS) -> str:
    lines = ["| step | " + " | ".join(f"{n:,} items: µs/item, peak RSS (above warm-up)" for n in sizes)
             + " | RSS ×, last/first (above warm-up) |", "|---|" + "---|" * (len(sizes) + 1)]
    for step in steps:
        cells, rss, above = [], [], []
        for n in sizes:
            per, peak, extra = measure(step, n)
            rss.append(peak)
            above.append(max(extra, 1 << 20))
            cells.append(f"{per * 1e6:.0f} µs, {peak / 2**20:.0f} MiB ({extra / 2**20:.0f})")
            print(f"{step} {n}: {cells[-1]}", file=sys.stderr, flush=True)
        lines.append(f"| {step} | " + " | ".join(cells) + f" | {rss[-1] / rss[0]:.2f} ({above[-1] / above[0]:.2f}) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    ap.add_argument("--out", type=Path, default=None, help="append the table with its command, date and load here")
    args = ap.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = table(args.sizes, args.steps)
    head = (f"\n## Scale ({datetime.date.today()})\n\n`python bench/bench_scale.py --sizes "
            f"{' '.join(map(str, args.sizes))}`, load average {load}, {os.cpu_count()} CPUs.\n\n")
    print(head + text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(head + text + "\n")


if __name__ == "__main__":
    main()
