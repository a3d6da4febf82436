"""GPU: the ViT-L/14 encoder in fp16 on CUDA gives the fp32 CPU features (cosine ≥ 0.999 per frame).

Random weights in the real architecture, saved as an open_clip checkpoint and read back through `load_model`, the
path `--clip-weights` takes; fp16 overflow in any of the 24 blocks would show as non-finite features here.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.extract.clip import ClipConfig, encode, load_model
from pipeline.extract.pixels import preprocess

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_vit_l14_fp16_on_cuda_matches_fp32_on_cpu(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-L-14", pretrained=None, precision="fp32", device="cpu")
    path = tmp_path / "vit-l-14-random.pt"
    torch.save(model.state_dict(), path)
    del model
    frames = np.random.RandomState(0).randint(0, 256, (8, 360, 640, 3), dtype=np.uint8)
    pixels = preprocess(frames)
    cpu_model = load_model(ClipConfig(model="ViT-L-14", weights=str(path), device="cpu"))
    cpu = encode(cpu_model, pixels, 8).astype(np.float32)
    del cpu_model
    gpu_model = load_model(ClipConfig(model="ViT-L-14", weights=str(path), device="cuda"))
    assert next(gpu_model.parameters()).dtype == torch.float16
    gpu = encode(gpu_model, pixels, 4).astype(np.float32)
    assert np.isfinite(gpu).all()
    cos = (cpu * gpu).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    print(f"\nViT-L/14 fp16 CUDA vs fp32 CPU: cosine min {cos.min():.6f} mean {cos.mean():.6f}")
    assert cos.min() >= 0.999
