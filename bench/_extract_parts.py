"""Parts of bench/bench_extract.py: generated media, the decode + preprocess ceiling, the long-clip decode
strategies, and the object-store measurements against a local moto S3 server. Not a test."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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


def make_long_clip(d: Path, seconds: float, gop: int, size=(640, 360), fps: float = 30.0) -> Path:
    """A long clip with a fixed GOP (frames rolled from one pattern: cheap to generate), cached."""
    from pipeline.synth.media import write_video

    w, h = size
    path = d / f"long_{w}x{h}_{seconds:g}s_gop{gop}.mp4"
    if not path.exists():
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = (128 + 90 * np.sin(xx / 13) * np.cos(yy / 19)).astype(np.uint8)
        frames = (np.stack([np.roll(base, 3 * i % w, 1), np.roll(base, i % h, 0), 255 - base], -1)
                  for i in range(int(seconds * fps)))
        write_video(path.with_suffix(".tmp.mp4"), frames, fps, gop=gop).rename(path)
    return path


# --- the ceiling: every core doing only decode + sample + preprocess, no Ray, no encoder -------------------------

_MODEL = {}


def _ceiling_init(clip_model: str | None = None, batch_size: int = 100) -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker, as a Ray task with num_cpus=1 runs
    import decord  # noqa: F401

    from pipeline.extract import clip  # noqa: F401

    if clip_model:
        _MODEL.update(model=clip.load_model(clip.ClipConfig(model=clip_model, device="cpu")), batch_size=batch_size)


def _ceiling_one(path: str) -> float:
    from pipeline.contract import timing
    from pipeline.extract.clip import encode
    from pipeline.extract.decode import open_video
    from pipeline.extract.pixels import preprocess

    t0 = time.process_time()
    src = open_video(path)
    pixels = preprocess(src.read(timing.frame_indices(src.num_frames, src.fps))).numpy()
    if _MODEL:
        encode(_MODEL["model"], pixels, _MODEL["batch_size"])
    return time.process_time() - t0


def ceiling(paths: list[str], workers: int, clip_model: str | None = None, batch_size: int = 100) -> dict:
    """videos/s of `workers` processes running our decode + sample + preprocess on the videos (imports paid before
    the clock starts): the most any extractor can reach on these cores with this preprocessing. With `clip_model`,
    each worker also encodes its videos (its own copy of the model): the same work as an extractor on a CPU-only
    machine, where the encoder shares the cores."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers, initializer=_ceiling_init, initargs=(clip_model, batch_size)) as pool:
        pool.map(_ceiling_one, paths[:workers])  # warm: imports, first decoder open
        t0 = time.time()
        cpu = pool.map(_ceiling_one, paths, chunksize=1)
        seconds = time.time() - t0
    return {"seconds": seconds, "cpu_seconds": float(sum(cpu))}


def preprocess_split(paths: list[str]) -> dict:
    """CPU s per video for decode and preprocess, in this process, one thread."""
    import torch

    from pipeline.contract import timing
    from pipeline.extract.decode import open_video
    from pipeline.extract.pixels import preprocess

    torch.set_num_threads(1)
    dec = pre = 0.0
    for p in paths:
        t0 = time.process_time()
        src = open_video(str(p))
        frames = src.read(timing.frame_indices(src.num_frames, src.fps))
        t1 = time.process_time()
        preprocess(frames)
        dec, pre = dec + t1 - t0, pre + time.process_time() - t1
    return {"decode": dec / len(paths), "preprocess": pre / len(paths)}


# --- long clips: seeking vs one forward pass vs PyAV ---------------------------------------------------------------

def long_clip_case(path: Path, repeats: int = 2) -> dict:
    import decord

    from pipeline.contract import timing
    from pipeline.extract import read_plan
    from pipeline.extract.decode import _pyav_read

    vr = decord.VideoReader(str(path), num_threads=1)
    idx = timing.frame_indices(len(vr), vr.get_avg_fps())
    keys = list(vr.get_key_indices())
    seek_frames, fwd_frames = read_plan.decoded_frames(idx, keys)
    ways = {"decord get_batch (seek)": lambda: read_plan.read(decord.VideoReader(str(path), num_threads=1), idx,
                                                              read_plan.SEEK),
            "decord one forward pass": lambda: read_plan.read(decord.VideoReader(str(path), num_threads=1), idx,
                                                              read_plan.SEQUENTIAL),
            "PyAV one forward pass": lambda: _pyav_read(str(path), idx, None)}
    cpu, frames = {}, {}
    for name, fn in ways.items():
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            frames[name] = fn()
            best = min(best, time.process_time() - t0)
        cpu[name] = best
    same = all(np.array_equal(f, frames["decord get_batch (seek)"]) for f in frames.values())
    return {"frames": len(vr), "keyframes": len(keys), "seek_frames": seek_frames, "forward_frames": fwd_frames,
            "chosen": read_plan.choose(idx, keys), "cpu": cpu, "same_frames": same}


# --- object storage: a local moto S3 server ------------------------------------------------------------------------

def start_s3() -> tuple[subprocess.Popen, str]:
    """`moto_server` on 127.0.0.1 (a separate process, so its CPU is not the driver's); AWS_* env pointed at it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                       "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull,
                       "AWS_EC2_METADATA_DISABLED": "true"})
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="vtl-bench")
    return proc, "s3://vtl-bench"


def upload(paths: list[Path], bucket: str) -> list[str]:
    from infra import storage

    urls = []
    for p in paths:
        url = f"{bucket}/media/{p.name}"
        storage.upload(p, url)
        urls.append(url)
    return urls


def object_reads(urls: list[str], limit: int = 6) -> dict:
    """Per video, in this process: (a) the spool: copy the object to a local file, decode with decord, remove it;
    (b) ranged reads: PyAV decodes straight from an s3fs file object (one forward pass). Wall s and bytes fetched."""
    from infra import storage
    from pipeline.contract import timing
    from pipeline.extract.decode import MediaSpool, open_video

    out = {}
    spool, t0, nbytes = MediaSpool(), time.time(), 0
    for url in urls[:limit]:
        local = spool.local(url)
        nbytes += os.path.getsize(local)
        src = open_video(local)
        src.read(timing.frame_indices(src.num_frames, src.fps))
        spool.release()
    spool.close()
    out["spool (copy, decord)"] = {"seconds": (time.time() - t0) / limit, "bytes": nbytes / limit}
    import av

    t0, nbytes = time.time(), 0
    for url in urls[:limit]:
        fs, path = storage.filesystem(url)
        with fs.open(path, "rb", block_size=1 << 20, cache_type="readahead") as f, av.open(f) as c:
            stream = c.streams.video[0]
            want = set(timing.frame_indices(stream.frames, float(stream.average_rate)))  # mp4: counts in the index
            for i, frame in enumerate(c.decode(stream)):
                if i in want:
                    frame.to_ndarray(format="rgb24")
            nbytes += getattr(f.cache, "total_requested_bytes", 0)
    out["ranged reads (PyAV on s3fs)"] = {"seconds": (time.time() - t0) / limit, "bytes": nbytes / limit}
    return out


def encoder_bytes(out: Path) -> int:
    return sum(json.loads(p.read_text()).get("encoder_bytes", 0) for p in (out / "tasks").glob("*.done.json"))
