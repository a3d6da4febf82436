"""Loaded vision towers and what extract takes from them: the pooled embedding of a frame (one row, VTimeLLM's) or its
patch-token grid average-pooled to √K × √K rows (`--tokens-per-frame K`).

Patch tokens: open_clip's native ViT gives them after `ln_post`, timm trunks (SigLIP, EVA) after their final norm,
Hugging Face towers as `last_hidden_state`; class tokens are dropped, and open_clip's projection (the one the pooled
embedding goes through) is applied to each, so one encoder has one width whatever K. Imports torch: load it inside
functions (pipeline/extract/clip.py does).
"""
from __future__ import annotations

import math

import torch

from pipeline.extract.encoders import TINY_CONFIG, TINY_RANDOM, TINY_SIGLIP, TINY_SIGLIP_CONFIG, register_tiny_timm


def tiny_model(name: str, seed: int):
    """A tiny open_clip CLIP with seeded random weights: the same weights in every process for a seed."""
    from open_clip.model import CLIP

    if name == TINY_SIGLIP:
        register_tiny_timm()
    cfg = TINY_CONFIG if name == TINY_RANDOM else TINY_SIGLIP_CONFIG
    # fork_rng keeps the caller's global RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIP(**cfg)


class HFTower(torch.nn.Module):
    """A Hugging Face vision tower behind open_clip's `encode_image`: pooler_output, or the patch tokens."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).pooler_output

    def encode_tokens(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x).last_hidden_state
        grid = (x.shape[-1] // self.model.config.patch_size) ** 2
        return out[:, out.shape[1] - grid:]  # a class token comes first (CLIP); SigLIP has none


def load_hf(folder: str) -> HFTower:
    """The vision tower of a local folder: a vision model (`CLIPVisionModel`, `SiglipVisionModel`, any AutoModel
    vision config), or the vision half of a full CLIP/SigLIP model."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder, torch_dtype=torch.float32)
    if hasattr(model, "vision_model") and hasattr(model.config, "vision_config"):
        model = model.vision_model
    return HFTower(model)


def patch_tokens(model, x: torch.Tensor) -> torch.Tensor:
    """(B, grid², D) patch tokens in the pooled embedding's width."""
    if isinstance(model, HFTower):
        return model.encode_tokens(x)
    visual = model.visual
    if hasattr(visual, "trunk"):  # open_clip's timm adapter: trunk features, then its head (projection or none)
        feats = visual.trunk.forward_features(x)[:, getattr(visual.trunk, "num_prefix_tokens", 1):]
        return visual.head(feats)
    tokens = visual._pool(visual.transformer(visual._embeds(x)))[1]
    return tokens @ visual.proj if visual.proj is not None else tokens


def pooled_grid(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """(B, g², D) → (B·k, D): the g × g grid average-pooled to √k × √k (torch's adaptive bins), rows frame by frame,
    each frame's k rows in raster order."""
    b, n, d = tokens.shape
    g, side = math.isqrt(n), math.isqrt(k)
    grid = tokens.transpose(1, 2).reshape(b, d, g, g)
    pooled = torch.nn.functional.adaptive_avg_pool2d(grid.float(), side)
    return pooled.reshape(b, d, k).transpose(1, 2).reshape(b * k, d)


def frame_rows(model, x: torch.Tensor, k: int) -> torch.Tensor:
    """The rows of `x`'s frames: the pooled embedding (k = 1, open_clip's `encode_image`), else k pooled patches."""
    if k == 1:
        return model.encode_image(x)
    return pooled_grid(patch_tokens(model, x), k)
