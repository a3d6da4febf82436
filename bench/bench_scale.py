"""Time per item and peak RSS of vtl's per-input steps at growing sizes: does memory stay flat when the input grows?

    python bench/bench_scale.py [--sizes 10000 100000 1000000] [--out docs/benchmarks.md]

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
step, path, out = sys.argv[1:4]
t0 = time.perf_counter()
if step in ("manifest-internvid", "manifest-lcc"):
    from manifests.build import ManifestConfig, build_manifest
    dataset = step.split("-")[1]
    build_manifest(ManifestConfig(dataset, path, out + "/m.parquet"), {{}})
elif step == "import-vtimellm":
    from pipeline.qa.import_vtimellm import ImportConfig, run_import
    run_import(ImportConfig(json=path, features_dir=out + "/feats", out=out + "/shards", stage=2))
dt = time.perf_counter() - t0
print(dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
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


WRITERS = {"manifest-internvid": (write_internvid, "jsonl"), "manifest-lcc": (write_lcc, "json"),
           "import-vtimellm": (write_vtimellm, "json")}
STEPS = tuple(WRITERS)


def measure(step: str, n: int) -> tuple[float, int]:
    """(seconds per item, peak RSS in bytes) of one step over n synthetic items, in a fresh subprocess."""
    write, ext = WRITERS[step]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / f"in.{ext}"
        write(data, n)
        os.makedirs(Path(tmp) / "feats")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
        out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), step, str(data), tmp],
                             capture_output=True, text=True, env=env, timeout=3600)
        if out.returncode:
            raise RuntimeError(f"{step} at {n}: {out.stderr[-2000:]}")
        seconds, kib = out.stdout.split()[-2:]
        return float(seconds) / n, int(kib) * 1024


def growth(step: str, small: int, large: int) -> float:
    """Peak RSS at `large` items over peak RSS at `small`."""
    return measure(step, large)[1] / measure(step, small)[1]


def table(sizes: list[int]) -> str:
    lines = ["| step | " + " | ".join(f"{n:,} items: µs/item, peak RSS" for n in sizes) + " | RSS ×, last/first |",
             "|---|" + "---|" * (len(sizes) + 1)]
    for step in STEPS:
        cells, rss = [], []
        for n in sizes:
            per, peak = measure(step, n)
            rss.append(peak)
            cells.append(f"{per * 1e6:.0f} µs, {peak / 2**20:.0f} MiB")
        lines.append(f"| {step} | " + " | ".join(cells) + f" | {rss[-1] / rss[0]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--out", type=Path, default=None, help="append the table with its command, date and load here")
    args = ap.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = table(args.sizes)
    head = (f"\n## Scale ({datetime.date.today()})\n\n`python bench/bench_scale.py --sizes "
            f"{' '.join(map(str, args.sizes))}`, load average {load}, {os.cpu_count()} CPUs.\n\n")
    print(head + text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(head + text + "\n")


if __name__ == "__main__":
    main()
