"""Benchmark: `vtl-pipeline extract` (Ray, local) vs a VTimeLLM-style sequential extractor, same videos, same encoder.

    .venv/bin/python bench/bench_extract.py [--videos 24] [--seconds 10] [--size 640x360] [--fps 30] [--tasks 8]

The baseline is what VTimeLLM's inference path does, in one process: decord `VideoReader` (default threads) →
`get_batch` of the 100 sampled indices at full resolution → one float tensor → torchvision Resize(224, bicubic, no
antialias) / CenterCrop / Normalize → `encode_image` of the 100 frames (one video per encoder batch) → float16.
vtl runs `run_extract` on a local Ray (started before timing, like the baseline's imports) with decode tasks on the
cores and the encoder as an actor. Both use the same encoder (`--clip-model`, tiny-random by default: the only one
that runs on a CPU box in reasonable time). The benchmark asserts per-frame cosine ≥ 0.9999 between the two and
reports the max abs difference. Not a test. Last line: `ratio=X.XX` (vtl videos/s over baseline videos/s).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def make_videos(d: Path, n: int, seconds: float, size: tuple[int, int], fps: float) -> list[Path]:
    """Moving interference patterns (cheap to encode, different in every frame), cached by parameters."""
    from pipeline.synth.media import write_video

    w, h = size
    d = d / f"videos_{w}x{h}_{seconds:g}s_{fps:g}fps"
    d.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    paths = []
    for v in range(n):
        path = d / f"bench{v:03d}.mp4"
        if not path.exists():
            frames = np.empty((int(seconds * fps), h, w, 3), np.uint8)
            for i in range(len(frames)):
                ph = 0.05 * i + v
                g = 128 + 90 * np.sin(xx / (13 + v % 7) + ph) * np.cos(yy / (19 + v % 5) - 0.7 * ph)
                frames[i] = np.stack([g, np.roll(g, 40 + i, 1) * 0.9, 255 - g], -1).clip(0, 255)
            write_video(path.with_suffix(".tmp.mp4"), frames, fps).rename(path)
        paths.append(path)
    return paths


def baseline(paths: list[str], clip_model: str, out: str) -> None:
    """The sequential VTimeLLM-style extractor (runs in its own process so its peak RSS is its own)."""
    import decord
    import torch
    from torchvision import transforms as T

    from pipeline.extract.clip import ClipConfig, load_model

    t0 = time.time()
    start = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = start.ru_utime + start.ru_stime
    model = load_model(ClipConfig(model=clip_model))
    tf = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=False), T.CenterCrop(224),
                    T.Normalize(MEAN, STD)])
    feats = {}
    for path in paths:
        vr = decord.VideoReader(path, ctx=decord.cpu(0))
        idx = np.linspace(0, len(vr) - 1, 100).astype(np.int32)
        x = torch.from_numpy(vr.get_batch(idx).asnumpy()).permute(0, 3, 1, 2).float() / 255.0
        with torch.inference_mode():
            feats[Path(path).stem] = model.encode_image(tf(x)).float().numpy().astype(np.float16)
    seconds = time.time() - t0
    np.savez(out, **feats)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss = usage.ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": rss, "peak_pss_mb": rss,
                      "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu0}))


class RssSampler(threading.Thread):
    """Peak summed memory of this process and all its descendants (the local Ray: daemons and workers).

    RSS counts pages shared between processes (the object store mapping, libraries) once per process, so its sum
    overstates; PSS splits shared pages between the processes that map them. Both are reported."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_rss = self.peak_pss = 0.0
        self.stop = threading.Event()
        self.cpu_start: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}

    def sample(self, first: bool = False) -> None:
        import psutil

        me = psutil.Process()
        rss = pss = 0
        self.count = getattr(self, "count", -1) + 1
        full = self.count % 5 == 0  # PSS reads smaps, which costs CPU: every 5th sample only
        for p in [me] + me.children(recursive=True):
            try:
                info, cpu = (p.memory_full_info() if full else p.memory_info()), p.cpu_times()
            except psutil.Error:
                continue
            rss, pss = rss + info.rss, pss + (info.pss if full else 0)
            used = cpu.user + cpu.system
            (self.cpu_start if first else self.cpu_last)[p.pid] = used
            self.cpu_start.setdefault(p.pid, 0.0)
        self.peak_rss = max(self.peak_rss, rss / 2**20)
        self.peak_pss = max(self.peak_pss, pss / 2**20) if full else self.peak_pss

    def cpu_seconds(self) -> float:
        """CPU time used during the run by this process tree (a process that exited counts until its last sample)."""
        return sum(max(self.cpu_last.get(pid, t0) - t0, 0.0) for pid, t0 in self.cpu_start.items())

    def run(self) -> None:
        self.sample(first=True)
        while not self.stop.wait(1.0):  # reading smaps is not free: sample rarely on a 2-core box
            self.sample()


def run_vtl(manifest: Path, out: Path, args, fast: bool) -> dict:
    import shutil

    from pipeline.extract.clip import ClipConfig
    from pipeline.extract.job import ExtractConfig, run_extract

    shutil.rmtree(out, ignore_errors=True)
    cfg = ExtractConfig(manifest=str(manifest), out=str(out), executor="ray", tasks=args.tasks,
                        batch_size=args.batch_size, encoders=1, progress=False,
                        clip=ClipConfig(model=args.clip_model, fast_resize=fast))
    sampler = RssSampler()
    sampler.start()
    t0 = time.time()
    summary = run_extract(cfg)
    seconds = time.time() - t0
    sampler.stop.set()
    sampler.join()
    sampler.sample()
    assert not summary.failed and summary.samples == args.videos, summary
    return {"seconds": seconds, "peak_rss_mb": sampler.peak_rss, "peak_pss_mb": sampler.peak_pss,
            "cpu_seconds": sampler.cpu_seconds()}


def cosine_report(base: dict, out: Path) -> tuple[float, float]:
    from pipeline.contract.shards import iter_samples

    worst_cos, max_abs = 1.0, 0.0
    for s in iter_samples(out):
        a, b = base[s.key].astype(np.float32), s.features.astype(np.float32)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        worst_cos, max_abs = min(worst_cos, float(cos.min())), max(max_abs, float(np.abs(a - b).max()))
    return worst_cos, max_abs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=300)
    ap.add_argument("--clip-model", default="tiny-random")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vtl-bench-extract"))
    ap.add_argument("--fast-resize", action="store_true", help="also time --fast-resize (cosine reported only)")
    ap.add_argument("--baseline-only", nargs=2, metavar=("PATHS_JSON", "OUT_NPZ"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_only:
        return baseline(json.loads(Path(args.baseline_only[0]).read_text()), args.clip_model, args.baseline_only[1])
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    w, h = (int(v) for v in args.size.split("x"))
    paths = make_videos(args.workdir, args.videos, args.seconds, (w, h), args.fps)
    from manifests.schema import ManifestRow, ReadResult, write_manifest

    manifest = write_manifest(ReadResult(rows=[ManifestRow(key=p.stem, dataset="bench", kind="video", media=str(p))
                                               for p in paths]), args.workdir / "manifest.parquet", {"bench": True})
    (args.workdir / "paths.json").write_text(json.dumps([str(p) for p in paths]))
    npz = args.workdir / "baseline.npz"
    res = subprocess.run([sys.executable, __file__, "--clip-model", args.clip_model, "--baseline-only",
                          str(args.workdir / "paths.json"), str(npz)], capture_output=True, text=True, check=True)
    base_run = json.loads(res.stdout.strip().splitlines()[-1])
    base = dict(np.load(npz, allow_pickle=False))

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    runs = {"vtl extract (default path)": run_vtl(manifest, args.workdir / "out", args, fast=False)}
    cos, max_abs = cosine_report(base, args.workdir / "out")
    if args.fast_resize:
        runs["vtl extract --fast-resize"] = run_vtl(manifest, args.workdir / "out_fast", args, fast=True)
        fast_cos, fast_abs = cosine_report(base, args.workdir / "out_fast")
    ray.shutdown()

    n, frames = args.videos, args.videos * 100
    print(f"\n{n} videos {args.size} {args.seconds:g} s {args.fps:g} fps, encoder {args.clip_model}, "
          f"{os.cpu_count()} CPU cores, tasks={args.tasks}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other work on the machine slows both sides)")
    print("| extractor | wall s | videos/s | frames/s | CPU s per video | peak RSS MB (sum) | peak PSS MB (sum) "
          "| vs baseline |")
    print("|---|---|---|---|---|---|---|---|")
    rows = {"VTimeLLM-style sequential baseline": base_run, **runs}
    for name, r in rows.items():
        print(f"| {name} | {r['seconds']:.1f} | {n / r['seconds']:.2f} | {frames / r['seconds']:.0f} | "
              f"{r['cpu_seconds'] / n:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_pss_mb']:.0f} | {base_run['seconds'] / r['seconds']:.2f}x |")
    print(f"per-frame cosine vtl vs baseline: min {cos:.6f}, max abs diff {max_abs:.3g}")
    if args.fast_resize:
        print(f"--fast-resize vs baseline: min cosine {fast_cos:.6f}, max abs diff {fast_abs:.3g}")
    assert cos >= 0.9999, f"vtl features differ from the baseline's (min cosine {cos})"
    print(f"ratio={base_run['seconds'] / runs['vtl extract (default path)']['seconds']:.2f}")


if __name__ == "__main__":
    main()
