"""The GPU check and benchmark of vtl: one call on a bare H200 (bench/gpu/run.sh), or `--dry-run` on CPU, tiny sizes.

    PYTHONPATH=. python3 bench/gpu/gpu_bench.py --out DIR [--dry-run] [--only tests,encoder,...] [--budget-scale 1.0]

Phases, each in its own child process with a time budget (a soft one the phase checks between measurements, and a
hard one at which the parent kills it), so one failure or hang still leaves the other phases' figures:

  tests     the `gpu`-marked tests (tests/gpu/, and the tiny-random one in tests/pipeline/extract/test_clip.py)
  encoder   CLIP ViT-L/14 architecture, random weights: frames/s through `pipeline.extract.clip.encode` (pixels from
            host memory, as extract runs it) and on-device `encode_image` for fp16/bf16 × batch × channels-last
            × torch.compile; % of the ceiling = 790 TFLOP/s / 162 GFLOP per frame ≈ 4,900 frames/s
  decode    generated 360p/720p 30 s and 120 s clips, decoded by `pipeline.extract.decode` (100 frames each, VTimeLLM's
            sampling) and preprocessed on all cores: frames/s per core → cores per GPU at the encoder's rate
  train_z2  LLaMA-7B shapes (Vicuna-7B: hidden 4096, 32 layers, 32 heads, MLP 11008, vocab 32000), random bf16
  train_z3  weights, stage-2 LoRA (r 64, α 128, projector frozen), gradient checkpointing, micro-batch 8,
            token lengths within the 2048 budget, through train.engine.DeepSpeedEngine at ZeRO-2 / ZeRO-3:
            tokens/s, MFU, peak GPU memory
  eval      the same 7B shapes through `eval.generate.generate`: queries/s at batch 1 (VTimeLLM's way) vs 16 vs 64

Writes DIR/figures.json (every phase's figures, errors and timings) and prints one table last; run.sh tees the whole
output to DIR/gpu_bench.log. `--dry-run` runs the same code with tiny dims on CPU (the default-suite test runs it).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# ---- Every vtl entry point the bench uses, in one place (adjust here when the modules move). -----------------------
from eval.generate import Query, generate  # noqa: E402
from pipeline.contract.conversation import IGNORE_INDEX, VIDEO_TOKEN_INDEX, generation_prompt  # noqa: E402
from pipeline.contract.shards import FEATURE_DIM  # noqa: E402
from pipeline.contract.timing import frame_indices  # noqa: E402
from pipeline.extract.clip import TINY_CONFIG, encode  # noqa: E402
from pipeline.extract.decode import open_video  # noqa: E402
from pipeline.extract.pixels import preprocess, short_side_size  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.engine import DeepSpeedEngine, TorchEngine, init_distributed  # noqa: E402
from train.model import VideoLLM, attention_implementation, new_projector, prepare_tokenizer  # noqa: E402
from train.stages import STAGES, add_lora, select_trainable  # noqa: E402
from train.tiny import train_tokenizer  # noqa: E402
from train.zero3 import partitioned, partitioned_build, restore_linear  # noqa: E402

# --------------------------------------------------------------------------------------------------------------------

PEAK_BF16 = 790e12          # H200 bf16 matrix product measured on this workplace's machines (KINDS.md)
VIT_L14_FLOP = 162e9        # per 224 px frame (the figure; 2 × multiply-adds)
CEILING_FPS = PEAK_BF16 / VIT_L14_FLOP
PHASES = ("tests", "encoder", "decode", "train_z2", "train_z3", "eval")
# Soft budgets in seconds (scaled by --budget-scale); the parent kills a phase at budget + HARD_GRACE.
BUDGETS = {"tests": 90, "encoder": 100, "decode": 75, "train_z2": 65, "train_z3": 55, "eval": 60}
HARD_GRACE = 25
VICUNA_7B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
             "intermediate_size": 11008, "vocab_size": 32000, "max_position_embeddings": 4096}
TINY_LLM = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
            "intermediate_size": 128, "vocab_size": 1024, "max_position_embeddings": 4096}
PROMPT_TEXTS = ["A chat between a curious user and an artificial intelligence assistant.",
                "During which frames can we see a man opening a door?", "From 00 to 24, a man walks in.",
                "Could you please describe the events in the video in detail?", "the person pours water into a glass"]


def sizes(dry: bool) -> dict:
    """Every size the phases use: the real ones, or tiny ones for the CPU dry run."""
    if dry:
        return dict(frames=8, enc_batches=[8], enc_dtypes=["float32"], enc_videos=2, clip_model="tiny",
                    clips=[("360p", 160, 90, 1.0), ("360p", 160, 90, 2.0)], fps=15, decode_workers=2,
                    decode_videos_per_worker=1, llm=TINY_LLM, micro_batch=2, text_tokens=(40, 120), max_tokens=256,
                    train_steps=1, warmup_steps=1, lora_r=8, lora_alpha=16, eval_batches=[1, 2, 4],
                    eval_queries={1: 2, 2: 2, 4: 4}, max_new_tokens=4, compile_backend="eager",
                    compile_batches=[8])
    return dict(frames=100, enc_batches=[100, 250, 500, 1000], enc_dtypes=["float16", "bfloat16"], enc_videos=10,
                clip_model="ViT-L-14", clips=[("360p", 640, 360, 30.0), ("360p", 640, 360, 120.0),
                                              ("720p", 1280, 720, 30.0), ("720p", 1280, 720, 120.0)],
                fps=30, decode_workers=os.cpu_count() or 1, decode_videos_per_worker=1, llm=VICUNA_7B,
                micro_batch=8, text_tokens=(150, 900), max_tokens=2048, train_steps=8, warmup_steps=2,
                lora_r=64, lora_alpha=128, eval_batches=[1, 16, 64], eval_queries={1: 8, 16: 32, 64: 64},
                max_new_tokens=64, compile_backend="inductor", compile_batches=[500])


# ---- helpers --------------------------------------------------------------------------------------------------------

class Phase:
    """What a phase writes: `put` saves its figures after every measurement, so a killed phase leaves what it had."""

    def __init__(self, name: str, part: Path, budget: float, dry: bool, overrides: dict | None = None):
        self.name, self.part, self.budget, self.dry = name, part, budget, dry
        self.t0 = time.perf_counter()
        self.data: dict = {"status": "running"}
        self.size = {**sizes(dry), **(overrides or {})}

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def put(self, key: str | None = None, value=None, **kw) -> None:
        if key is not None:
            self.data[key] = value
        self.data.update(kw)
        self.data["seconds"] = round(time.perf_counter() - self.t0, 2)
        tmp = self.part.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, default=str))
        tmp.replace(self.part)

    def log(self, msg: str) -> None:
        print(f"[{self.name} {time.perf_counter() - self.t0:6.1f}s] {msg}", flush=True)


def device_of(dry: bool) -> str:
    import torch

    if dry:
        return "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU (run with --dry-run on a CPU machine)")
    return "cuda"


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if device == "cuda" else None


def median(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


# ---- tests ----------------------------------------------------------------------------------------------------------

def phase_tests(ph: Phase) -> None:
    import pytest

    results: dict[str, str] = {}

    class Collect:
        def pytest_runtest_logreport(self, report):
            if report.when == "call" or report.outcome != "passed":
                results[report.nodeid] = report.outcome
                ph.put(results=results)

        def pytest_collectreport(self, report):
            if report.failed:
                results[report.nodeid or "collection"] = "collection error"

    args = ["-q", "-m", "gpu", "-rA", "-p", "no:cacheprovider", "--continue-on-collection-errors",
            str(ROOT / "tests/gpu"), str(ROOT / "tests/pipeline/extract/test_clip.py")]
    code = pytest.main(args, plugins=[Collect()])
    counts = {k: sum(1 for v in results.values() if v == k) for k in ("passed", "failed", "skipped")}
    counts["errors"] = sum(1 for v in results.values() if v == "collection error")
    ph.put(results=results, exit_code=int(code), **counts)


# ---- encoder --------------------------------------------------------------------------------------------------------

def clip_model(name: str, device: str, seed: int = 0):
    """ViT-L/14 (open_clip's architecture, random weights: same FLOPs as OpenAI's) or our tiny-random config."""
    import torch
    from open_clip.model import CLIP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "tiny":
            model = CLIP(**TINY_CONFIG)
        else:
            import open_clip

            model = open_clip.create_model(name, pretrained=None, precision="fp32", device=device)
    return model.to(device).eval()


def _time_encode(fn, x, device: str, reps: int, warm: int = 2) -> float:
    """Median seconds of `fn(x)` (CUDA events on a GPU, perf_counter on CPU)."""
    import torch

    with torch.inference_mode():
        for _ in range(warm):
            fn(x)
        sync(device)
        times = []
        for _ in range(reps):
            if device == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn(x)
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) / 1000)
            else:
                t = time.perf_counter()
                fn(x)
                times.append(time.perf_counter() - t)
    return median(times)


def phase_encoder(ph: Phase) -> None:
    import torch

    s, device = ph.size, device_of(ph.dry)
    torch.backends.cuda.matmul.allow_tf32 = True
    base = clip_model(s["clip_model"], device)
    ph.put(model=s["clip_model"], device=device, ceiling_fps=round(CEILING_FPS),
           params_m=round(sum(p.numel() for p in base.visual.parameters()) / 1e6, 1))
    rows = []
    # 1. The extract path as it runs: float32 pixels in host memory → encode() (copy, fp16 on GPU, copy back).
    dtype0 = torch.float16 if device == "cuda" else torch.float32
    model = base.to(dtype0)
    n = s["frames"] * s["enc_videos"]
    pixels = torch.randn(n, 3, 224, 224)
    for bs in s["enc_batches"]:
        if ph.left() < 10:
            break
        encode(model, pixels[:bs], bs)
        sync(device)
        t = time.perf_counter()
        feats = encode(model, pixels, bs)
        sec = time.perf_counter() - t
        assert feats.shape == (n, FEATURE_DIM) and np.isfinite(feats).all()
        fps = n / sec
        rows.append({"path": "vtl encode (host pixels)", "dtype": str(dtype0).removeprefix("torch."), "batch": bs,
                     "channels_last": False, "compile": False, "frames_per_s": round(fps, 1),
                     "pct_ceiling": round(100 * fps / CEILING_FPS, 1)})
        ph.log(f"encode() batch {bs}: {fps:.0f} frames/s")
        ph.put(rows=rows)
    del pixels
    # 2. The chip: pixels already on the device, encode_image alone, per dtype × batch × channels-last (eager).
    reps = 3 if ph.dry else 5
    variants = [(dt, bs, cl, False) for dt in s["enc_dtypes"] for bs in s["enc_batches"] for cl in (False, True)]
    variants += [(dt, bs, False, True) for dt in s["enc_dtypes"] for bs in s["compile_batches"]]
    compiled: dict = {}
    for dt_name, bs, cl, comp in variants:
        need = 45 if comp and not ph.dry else 8
        if ph.left() < need:
            rows.append({"path": "device encode_image", "dtype": dt_name, "batch": bs, "channels_last": cl,
                         "compile": comp, "skipped": "time budget"})
            continue
        dt = getattr(torch, dt_name)
        try:
            m = base.to(dt)
            m = m.to(memory_format=torch.channels_last) if cl else m.to(memory_format=torch.contiguous_format)
            fn = m.encode_image
            if comp:
                key = dt_name
                if key not in compiled:
                    compiled[key] = torch.compile(m.encode_image, backend=s["compile_backend"])
                fn = compiled[key]
            x = torch.randn(bs, 3, 224, 224, device=device, dtype=dt)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            t_first = time.perf_counter()
            with torch.inference_mode():
                fn(x)
            sync(device)
            first = time.perf_counter() - t_first
            sec = _time_encode(fn, x, device, reps)
            fps = bs / sec
            row = {"path": "device encode_image", "dtype": dt_name, "batch": bs, "channels_last": cl, "compile": comp,
                   "frames_per_s": round(fps, 1), "pct_ceiling": round(100 * fps / CEILING_FPS, 1),
                   "first_call_s": round(first, 2), "peak_gib": peak_gib(device)}
            ph.log(f"{dt_name} batch {bs} cl={cl} compile={comp}: {fps:.0f} frames/s "
                   f"({row['pct_ceiling']}% of ceiling)")
            del x
        except Exception as e:  # an OOM or a compile failure ends this variant, not the phase
            row = {"path": "device encode_image", "dtype": dt_name, "batch": bs, "channels_last": cl, "compile": comp,
                   "error": f"{type(e).__name__}: {str(e)[:300]}"}
            ph.log(f"{dt_name} batch {bs} cl={cl} compile={comp}: {row['error']}")
            if device == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        ph.put(rows=rows)
    ok = [r for r in rows if "frames_per_s" in r]
    best = max(ok, key=lambda r: r["frames_per_s"]) if ok else None
    ph.put(rows=rows, best=best, best_fps=best["frames_per_s"] if best else None)


# ---- decode ---------------------------------------------------------------------------------------------------------

def make_clip(args) -> str:
    """A panning, grainy pattern (H.264, x264 veryfast, CRF 23, its default keyframe interval), encoded frame by frame.

    The frames are views into one precomputed strip plus one of eight grain frames, so making them costs far less than
    encoding them; the grain keeps the bitrate off the floor (the rows record the Mbit/s that came out)."""
    import av

    path, w, h, seconds, fps = args
    rng = np.random.default_rng(w)
    yy, xx = np.mgrid[0:h, 0:2 * w].astype(np.float32)
    g = 128 + 90 * np.sin(xx / 17.0 + 0.3 * np.sin(yy / 41.0)) * np.cos(yy / 23.0)
    strip = np.ascontiguousarray(np.stack([g, np.roll(g, h // 3, axis=0), 255 - g], -1).clip(0, 230).astype(np.uint8))
    grain = rng.integers(0, 32, (8, h, w, 3), dtype=np.uint8)  # ~2 Mbit/s at 720p (YouTube: 2-4)
    tmp = path + ".tmp.mp4"
    with av.open(tmp, mode="w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "threads": "4"}
        for i in range(int(round(seconds * fps))):
            off = (4 * i) % w
            frame = strip[:, off:off + w] + grain[i % 8]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def loop_clip(src: str, dst: str, times: int) -> str:
    """`src` played `times` times in a row, remuxed (no re-encode): decoding it costs what a clip that long costs."""
    import av

    with av.open(src) as inp:
        packets = [p for p in inp.demux(inp.streams.video[0]) if p.pts is not None]
        span = max(p.pts + (p.duration or 0) for p in packets) - min(p.pts for p in packets)
    tmp = dst + ".tmp.mp4"
    with av.open(tmp, mode="w") as out:
        with av.open(src) as first:
            ost = out.add_stream_from_template(first.streams.video[0])
        for k in range(times):
            with av.open(src) as inp:
                ist = inp.streams.video[0]
                for p in inp.demux(ist):
                    if p.pts is None:
                        continue
                    p.pts += k * span
                    p.dts += k * span
                    p.stream = ost
                    out.mux(p)
    os.replace(tmp, dst)
    return dst


def make_clips(specs: list, workdir: Path, fps: float, pool) -> list[tuple]:
    """One encoded clip per resolution, at the shortest length asked; longer ones loop it (a whole multiple)."""
    base: dict = {}
    for name, w, h, sec in specs:
        base[(name, w, h)] = min(sec, base.get((name, w, h), sec))
    jobs = {k: (str(workdir / f"{k[0]}_{int(v)}s.mp4"), k[1], k[2], v, fps) for k, v in base.items()}
    made = dict(zip(jobs, pool.map(make_clip, list(jobs.values()))))
    clips = []
    for name, w, h, sec in specs:
        src, first = made[(name, w, h)], base[(name, w, h)]
        times = int(round(sec / first))
        path = src if times == 1 else loop_clip(src, str(workdir / f"{name}_{int(sec)}s.mp4"), times)
        clips.append((path, w, h, sec, fps, os.path.getsize(path) * 8 / sec / 1e6))
    return clips


def _decode_worker_init() -> None:
    """Each decode worker imports and sets up before the clock starts (torchvision, decoders, one thread)."""
    import torch
    from torchvision.transforms import functional  # noqa: F401

    torch.set_num_threads(1)
    for name in ("decord", "av"):
        with contextlib.suppress(ImportError):
            __import__(name)


def decode_one(args) -> tuple[float, float, str]:
    """The extract path for one video: open, VTimeLLM's 100 frame indices, read, preprocess → (decode s, prep s)."""
    path, fast = args
    t = time.perf_counter()
    src = open_video(path, threads=1)
    idx = frame_indices(src.num_frames, src.fps)
    if fast:
        h, w = src.frame_shape()
        frames = src.read(idx, short_side_size(h, w))
    else:
        frames = src.read(idx)
    t2 = time.perf_counter()
    pixels = preprocess(frames, resize=not fast)
    assert pixels.shape[0] == len(idx)
    return t2 - t, time.perf_counter() - t2, src.decoder


def phase_decode(ph: Phase, encoder_fps: float | None) -> None:
    s = ph.size
    workdir = Path(tempfile.mkdtemp(prefix="vtl-gpu-clips-"))
    t = time.perf_counter()
    ctx = mp.get_context("fork")
    with ctx.Pool(min(len(s["clips"]), os.cpu_count() or 1)) as pool:
        jobs = make_clips(s["clips"], workdir, s["fps"], pool)
    ph.put(generate_s=round(time.perf_counter() - t, 1), cores=os.cpu_count(), workers=s["decode_workers"])
    ph.log(f"generated {len(jobs)} clips in {time.perf_counter() - t:.1f}s")
    rows = []
    workers = s["decode_workers"]
    with ctx.Pool(workers, initializer=_decode_worker_init) as pool:  # all clips' default path first, then fast
        for fast, (path, w, h, sec, fps, mbit) in [(f, j) for f in (False, True) for j in jobs]:
            if ph.left() < 5:
                rows.append({"clip": Path(path).stem, "fast_resize": fast, "skipped": "time budget"})
                continue
            n = workers * s["decode_videos_per_worker"]
            t = time.perf_counter()
            res = pool.map(decode_one, [(path, fast)] * n, chunksize=1)
            wall = time.perf_counter() - t
            dec, prep = sum(r[0] for r in res), sum(r[1] for r in res)
            frames = n * 100
            per_core = frames / (dec + prep)  # frames/s one core sustains, decode + preprocess
            row = {"clip": Path(path).stem, "size": f"{w}x{h}", "seconds": sec, "mbit_per_s": round(mbit, 2),
                   "fast_resize": fast,
                   "decoder": res[0][2], "videos": n, "wall_s": round(wall, 2),
                   "videos_per_s": round(n / wall, 2), "frames_per_s": round(frames / wall, 1),
                   "decode_s_per_video": round(dec / n, 3), "preprocess_s_per_video": round(prep / n, 3),
                   "frames_per_s_per_core": round(per_core, 1)}
            if encoder_fps:  # per core from each video's own time; and from the whole machine's wall clock
                row["cores_per_gpu"] = round(encoder_fps / per_core, 1)
                row["cores_per_gpu_wall"] = round(workers * encoder_fps / (frames / wall), 1)
            ph.log(f"{row['clip']} fast={fast} ({row['decoder']}): {row['videos_per_s']} videos/s on {workers} "
                   f"workers, {per_core:.0f} frames/s/core" +
                   (f" → {row['cores_per_gpu']} cores per GPU" if encoder_fps else ""))
            rows.append(row)
            ph.put(rows=rows)
    ph.put(rows=rows, encoder_fps=encoder_fps)


# ---- LLM (training and eval) ----------------------------------------------------------------------------------------

def bench_tokenizer():
    """A small BPE (the bench's model is random; only the ids' lengths matter): vocab smaller than the model's."""
    return prepare_tokenizer(train_tokenizer(PROMPT_TEXTS * 20, vocab_size=400))


def build_llm(shape: dict, tok, dtype, device: str):
    """A LLaMA-architecture causal LM with random weights at `shape` (Vicuna-7B's, or tiny), built on `device`."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    attn = attention_implementation("auto")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        from transformers.integrations import is_deepspeed_zero3_enabled

        where = contextlib.nullcontext() if is_deepspeed_zero3_enabled() else torch.device(device)
        with where:
            llm = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=attn)
    return llm, attn


def matmul_params(shape: dict) -> int:
    """Parameters that take part in matrix products per token (all linear layers and lm_head; not the embedding)."""
    h, i, L, V = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"], shape["vocab_size"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    return L * (2 * h * h + 2 * h * kv + 3 * h * i) + h * V


def forward_flops(shape: dict, lengths: list[int]) -> float:
    """Forward FLOPs of a batch: 2·N per token plus attention scores and values (4·L·h·s² per sequence, full)."""
    n, h, L = matmul_params(shape), shape["hidden_size"], shape["num_hidden_layers"]
    return sum(2 * n * s + 4 * L * h * s * s for s in lengths)


def synthetic_batches(s: dict, vocab: int, steps: int, seed: int = 0):
    """Right-padded stage-2 style micro-batches for VideoLLM.forward: one video sentinel (100 feature rows) after a
    35-token system prompt, labels on the last 40% of the text; text lengths drawn within s['text_tokens']."""
    import torch

    rng = np.random.default_rng(seed)
    rows = s["frames"]
    out = []
    for _ in range(steps):
        texts = [int(x) for x in rng.integers(s["text_tokens"][0], s["text_tokens"][1], s["micro_batch"])]
        texts = [min(t, s["max_tokens"] - rows + 1) for t in texts]
        width = max(texts)
        ids = torch.full((len(texts), width), 0, dtype=torch.long)
        labels = torch.full((len(texts), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(texts), width), dtype=torch.long)
        for b, t in enumerate(texts):
            row = torch.as_tensor(rng.integers(3, vocab, t))
            row[min(35, t - 1)] = VIDEO_TOKEN_INDEX
            ids[b, :t] = row
            cut = int(t * 0.6)
            labels[b, cut:t] = row[cut:t]
            labels[b, :t][row == VIDEO_TOKEN_INDEX] = IGNORE_INDEX
            mask[b, :t] = 1
        feats = torch.from_numpy(rng.standard_normal((len(texts), rows, FEATURE_DIM)).astype(np.float16))
        lengths = [t - 1 + rows for t in texts]
        out.append(({"input_ids": ids, "attention_mask": mask, "labels": labels, "features": feats,
                     "num_features": torch.full((len(texts),), rows)}, lengths))
    return out


def phase_train(ph: Phase, zero: int) -> None:
    import torch

    s, device = ph.size, device_of(ph.dry)
    precision = "fp32" if ph.dry else "bf16"
    dtype = torch.float32 if ph.dry else torch.bfloat16
    out = tempfile.mkdtemp(prefix="vtl-gpu-train-")
    cfg = TrainConfig(stage=2, shards=out, llm="bench-random", out=out, from_checkpoint=out, micro_batch=s["micro_batch"],
                      global_batch=s["micro_batch"], zero=zero, precision=precision, engine="deepspeed",
                      gradient_checkpointing=True, lora_r=s["lora_r"], lora_alpha=s["lora_alpha"],
                      max_tokens=s["max_tokens"], world_size=1, seed=0)
    try:
        import deepspeed  # noqa: F401
        kind = "deepspeed"
        rank, world, _ = init_distributed()
        import torch.distributed as dist

        backend = dist.get_backend()
    except ImportError:
        kind, backend = "torch", None
        if zero == 3:
            ph.put(skip_reason="deepspeed is not installed (ZeRO-3 needs it)")
            return
    ph.put(engine=kind, backend=backend, zero=zero, precision=precision, micro_batch=s["micro_batch"],
           shape=s["llm"], lora_r=s["lora_r"], device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tok = bench_tokenizer()
    t = time.perf_counter()
    with partitioned_build(cfg, precision) if kind == "deepspeed" else contextlib.nullcontext():
        llm, attn = build_llm(s["llm"], tok, dtype, device)
    llm = add_lora(llm, cfg)
    model = VideoLLM(llm, tok, new_projector(FEATURE_DIM, s["llm"]["hidden_size"]).to(dtype), "v1")
    trainable = select_trainable(model, STAGES[2].trainable)
    model.enable_gradient_checkpointing()
    model.train()
    ph.put(attn=attn, build_s=round(time.perf_counter() - t, 1), trainable_tensors=len(trainable),
           trainable_m=round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 1))
    ph.log(f"model built in {time.perf_counter() - t:.1f}s ({attn}, {kind}, backend {backend})")
    t = time.perf_counter()
    engine = (DeepSpeedEngine if kind == "deepspeed" else TorchEngine)(model, cfg, total_steps=1000)
    ph.put(engine_init_s=round(time.perf_counter() - t, 1), after_init_gib=peak_gib(device),
           partitioned=partitioned(engine.module))
    batches = synthetic_batches(s, s["llm"]["vocab_size"], s["warmup_steps"] + s["train_steps"])
    times, losses, tokens, flops, padded = [], [], [], [], []
    for i, (batch, lengths) in enumerate(batches):
        if i >= s["warmup_steps"] and ph.left() < 2 * (median(times) if times else 5):
            ph.put(stopped_early=f"time budget after {len(times)} timed steps")
            break
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        sync(device)
        t = time.perf_counter()
        loss = engine.forward(batch)
        engine.backward(loss)
        engine.step()
        sync(device)
        dt = time.perf_counter() - t
        losses.append(float(loss.item()))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"loss is {losses[-1]} at step {i}")
        if i >= s["warmup_steps"]:
            times.append(dt)
            tokens.append(sum(lengths))
            padded.append(len(lengths) * max(lengths))
            flops.append(forward_flops(s["llm"], lengths))
        ph.log(f"step {i}: {dt:.2f}s loss {losses[-1]:.3f} ({sum(lengths)} tokens)")
    total_t = sum(times)
    tps = sum(tokens) / total_t if times else None
    fwd = sum(flops) / total_t if times else None
    res = {"steps_timed": len(times), "step_s_median": round(median(times), 3), "losses": losses,
           "tokens_per_step_mean": round(float(np.mean(tokens)), 1) if tokens else None,
           "padding_share": round(1 - sum(tokens) / sum(padded), 3) if padded else None,
           "tokens_per_s": round(tps, 1) if tps else None, "peak_gib": peak_gib(device),
           "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2 ** 30, 2) if device == "cuda" else None}
    if fwd:
        # LoRA on a frozen base needs forward + activation gradients (2 × forward); a full fine-tune, 3 × (the
        # usual "6N"); with checkpointing the chip also recomputes the forward (hardware FLOPs, 3 × for LoRA).
        res.update(mfu=round(2 * fwd / PEAK_BF16, 4), mfu_6n_convention=round(3 * fwd / PEAK_BF16, 4),
                   hfu=round(3 * fwd / PEAK_BF16, 4), model_tflops_per_s=round(2 * fwd / 1e12, 1))
    ph.put(**res)
    del engine, model, llm
    restore_linear()
    gc.collect()


def phase_eval(ph: Phase) -> None:
    import torch

    s, device = ph.size, device_of(ph.dry)
    dtype = torch.float32 if ph.dry else torch.bfloat16
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tok = bench_tokenizer()
    t = time.perf_counter()
    llm, attn = build_llm(s["llm"], tok, dtype, device)
    model = VideoLLM(llm, tok, new_projector(FEATURE_DIM, s["llm"]["hidden_size"]).to(device, dtype), "v1").eval()
    # Random weights would stop at a random EOS; fix the answer length so every batch size does the same work.
    llm.generation_config.min_new_tokens = s["max_new_tokens"]
    ph.put(attn=attn, build_s=round(time.perf_counter() - t, 1), device=device, dtype=str(dtype), shape=s["llm"],
           max_new_tokens=s["max_new_tokens"])
    rng = np.random.default_rng(0)
    queries = []
    for i in range(max(s["eval_queries"].values())):
        q = f"<video>\n{PROMPT_TEXTS[1 + i % 4]}"
        ids = generation_prompt([{"from": "human", "value": q}], tok, "v1")
        queries.append(Query(ids, rng.standard_normal((s["frames"], FEATURE_DIM)).astype(np.float16)))
    ph.put(prompt_tokens=len(queries[0].prompt_ids) - 1 + s["frames"])
    rows = []
    for bs in s["eval_batches"]:
        n = s["eval_queries"][bs]
        if ph.left() < 10:
            rows.append({"batch": bs, "skipped": "time budget"})
            continue
        try:
            llm.generation_config.min_new_tokens = 2
            generate(model, queries[:bs], bs, 2)  # warm-up at this batch size
            sync(device)
            llm.generation_config.min_new_tokens = s["max_new_tokens"]
            t = time.perf_counter()
            answers = generate(model, queries[:n], bs, s["max_new_tokens"])
            sync(device)
            sec = time.perf_counter() - t
            assert len(answers) == n
            row = {"batch": bs, "queries": n, "seconds": round(sec, 2), "queries_per_s": round(n / sec, 3),
                   "new_tokens_per_s": round(n * s["max_new_tokens"] / sec, 1), "peak_gib": peak_gib(device)}
        except Exception as e:
            row = {"batch": bs, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        ph.log(f"batch {bs}: {row}")
        rows.append(row)
        ph.put(rows=rows)
    q1 = next((r["queries_per_s"] for r in rows if r["batch"] == 1 and "queries_per_s" in r), None)
    for r in rows:
        if q1 and "queries_per_s" in r:
            r["speedup_vs_batch1"] = round(r["queries_per_s"] / q1, 2)
    ph.put(rows=rows)


# ---- orchestration --------------------------------------------------------------------------------------------------

def _child(name: str, part: str, budget: float, dry: bool, extra, overrides: dict) -> None:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers/torch renames: noise in the log
    ph = Phase(name, Path(part), budget, dry, overrides)
    try:
        if name == "tests":
            phase_tests(ph)
        elif name == "encoder":
            phase_encoder(ph)
        elif name == "decode":
            phase_decode(ph, extra)
        elif name.startswith("train_z"):
            phase_train(ph, int(name[-1]))
        elif name == "eval":
            phase_eval(ph)
        ph.put(status="skipped" if "skip_reason" in ph.data else "ok")
    except BaseException as e:  # noqa: BLE001 - whatever it was, the figures so far and the error get written
        ph.put(status="error", error=f"{type(e).__name__}: {str(e)[:500]}", traceback=traceback.format_exc()[-3000:])
        ph.log(f"FAILED: {type(e).__name__}: {e}")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (DeepSpeed/NCCL atexit hooks can hang a finished phase)


def run_phase(ctx, name: str, tmp: Path, budget: float, dry: bool, extra=None, overrides=None) -> dict:
    part = tmp / f"{name}.json"
    t = time.perf_counter()
    print(f"==== {name} (budget {budget:.0f}s) ====", flush=True)
    proc = ctx.Process(target=_child, args=(name, str(part), budget, dry, extra, overrides or {}))
    proc.start()
    proc.join(budget + HARD_GRACE)
    killed = proc.is_alive()
    if killed:
        proc.kill()
        proc.join(10)
    data = json.loads(part.read_text()) if part.exists() else {}
    if killed:
        data.update(status="killed", error=f"over its hard limit of {budget + HARD_GRACE:.0f}s")
    elif not data:
        data = {"status": "error", "error": f"the phase process exited with code {proc.exitcode} and wrote nothing"}
    data["wall_s"] = round(time.perf_counter() - t, 1)
    print(f"==== {name}: {data.get('status')} in {data['wall_s']}s ====", flush=True)
    return data


def environment(dry: bool) -> dict:
    env = {"python": platform.python_version(), "machine": platform.machine(), "cores": os.cpu_count(),
           "dry_run": dry, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    import importlib.metadata as md

    for pkg in ("torch", "transformers", "peft", "deepspeed", "open_clip_torch", "av", "decord", "webdataset"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    if not dry:
        import subprocess

        try:
            env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.sm",
                                                "--format=csv,noheader"], capture_output=True, text=True,
                                               timeout=20).stdout.strip()
        except Exception as e:  # noqa: BLE001
            env["nvidia_smi"] = f"unavailable: {e}"
    return env


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
    return str(v)


def table(fig: dict) -> str:
    lines = [f"vtl GPU bench ({'DRY RUN, CPU, tiny sizes' if fig['env']['dry_run'] else 'H200'}), "
             f"{fig['env']['date_utc']}", f"{'phase':<9} {'what':<58} {'figure':>14}", "-" * 83]

    def add(phase, what, value):
        lines.append(f"{phase:<9} {what:<58} {_fmt(value):>14}")

    ph = fig["phases"]
    for name in PHASES:
        d = ph.get(name)
        if d is None:
            continue
        if d.get("status") not in ("ok",):
            add(name, f"status {d.get('status')}: {str(d.get('error') or d.get('skip_reason', ''))[:48]}", None)
        if name == "tests":
            add(name, "gpu tests passed / failed / skipped / errors",
                f"{d.get('passed', 0)}/{d.get('failed', 0)}/{d.get('skipped', 0)}/{d.get('errors', 0)}")
        elif name == "encoder":
            for r in d.get("rows", []):
                if "frames_per_s" in r:
                    where = "encode() host px" if r["path"].startswith("vtl") else "on-device"
                    what = (f"{where} {r['dtype']} b{r['batch']}{' cl' if r['channels_last'] else ''}"
                            f"{' compile' if r['compile'] else ''}")
                    add(name, f"{what}: frames/s ({r['pct_ceiling']}% of ceiling)", r["frames_per_s"])
        elif name == "decode":
            for r in d.get("rows", []):
                if "frames_per_s_per_core" in r:
                    what = f"{r['clip']}{' fast' if r['fast_resize'] else ''} {r['decoder']}: frames/s/core, videos/s"
                    add(name, what, f"{r['frames_per_s_per_core']:.0f}, {r['videos_per_s']:.2f}")
                    if "cores_per_gpu" in r:
                        add(name, f"{r['clip']}{' fast' if r['fast_resize'] else ''}: cores per GPU",
                            r["cores_per_gpu"])
        elif name.startswith("train"):
            add(name, f"{d.get('engine')} ZeRO-{d.get('zero')} {d.get('precision')} tokens/s", d.get("tokens_per_s"))
            add(name, "MFU (LoRA: 2×fwd) / 6N convention", f"{_fmt(d.get('mfu'))} / {_fmt(d.get('mfu_6n_convention'))}")
            add(name, "peak GPU memory GiB", d.get("peak_gib"))
        elif name == "eval":
            for r in d.get("rows", []):
                if "queries_per_s" in r:
                    add(name, f"batch {r['batch']}: queries/s (×{r.get('speedup_vs_batch1')} batch 1)",
                        r["queries_per_s"])
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or "bench/out/gpu")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (proves the script before GPU time)")
    ap.add_argument("--only", default=",".join(PHASES), help=f"comma-separated phases out of {','.join(PHASES)}")
    ap.add_argument("--budget-scale", type=float, default=1.0, help="multiply every phase's time budget")
    ap.add_argument("--start", choices=("spawn", "fork"), default=None,
                    help="how phase processes start (default: fork for --dry-run, saving imports; spawn on the GPU, "
                         "so no CUDA state crosses a fork)")
    ap.add_argument("--text-tokens", default=None, metavar="LO:HI",
                    help="training text tokens per sample, drawn uniformly (default 150:900 on the GPU; plus 100 "
                         "feature rows, within the 2048 budget)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="eval answer length (default 64)")
    args = ap.parse_args(argv)
    overrides: dict = {}
    if args.text_tokens:
        lo, hi = (int(x) for x in args.text_tokens.split(":"))
        overrides["text_tokens"] = (lo, hi)
    if args.max_new_tokens:
        overrides["max_new_tokens"] = args.max_new_tokens
    only = [p for p in args.only.split(",") if p]
    bad = sorted(set(only) - set(PHASES))
    if bad:
        ap.error(f"unknown phases {bad}")
    if "://" in args.out:  # the figures JSON and logs are written with local file calls
        ap.error(f"--out must be a local folder, got {args.out}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = args.start or ("fork" if args.dry_run else "spawn")
    if start == "fork":  # children inherit these imports instead of paying for them each (CPU only: no CUDA here)
        import open_clip  # noqa: F401
        import peft  # noqa: F401
        import transformers.models.llama.modeling_llama  # noqa: F401
        with contextlib.suppress(ImportError):
            import deepspeed  # noqa: F401
    ctx = mp.get_context(start)
    t0 = time.perf_counter()
    fig = {"env": environment(args.dry_run), "ceiling_fps": round(CEILING_FPS), "peak_bf16_tflops": PEAK_BF16 / 1e12,
           "budgets_s": {p: BUDGETS[p] * args.budget_scale for p in only}, "overrides": overrides, "phases": {}}
    with tempfile.TemporaryDirectory(prefix="vtl-gpu-bench-") as tmp:
        for name in only:
            extra = None
            if name == "decode":
                extra = (fig["phases"].get("encoder") or {}).get("best_fps")
            fig["phases"][name] = run_phase(ctx, name, Path(tmp), BUDGETS[name] * args.budget_scale, args.dry_run,
                                            extra, overrides)
            fig["total_s"] = round(time.perf_counter() - t0, 1)
            (out / "figures.json").write_text(json.dumps(fig, indent=1, default=str))
    text = table(fig)
    (out / "table.txt").write_text(text + "\n")
    print(f"\nfigures: {out / 'figures.json'}   total {fig['total_s']}s\n{text}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
