"""Which image encoders extract runs, described without loading them: family, output width, input pixels and the
vision tower's shape (for the memory estimate), read from the model's own configuration.

Families: `open_clip` (any open_clip model name: its config gives the width, its pretrained config the mean/std and
resize mode; `tiny-random` and `tiny-random-siglip` are small seeded-random configs for tests and CPU demos) and `hf`
(a local Hugging Face folder holding a vision tower, e.g. `CLIPVisionModel` or `SiglipVisionModel`: config.json gives
the shape, preprocessor_config.json the pixels). Heavy libraries are imported inside functions.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.contract.provenance import TINY_RANDOM
from pipeline.contract.shards import FEATURE_DIM
from pipeline.extract.pixels import CLIP_MEAN, CLIP_STD, IMAGE_SIZE, PixelSpec

TINY_SIGLIP = "tiny-random-siglip"
TINY_NAMES = (TINY_RANDOM, TINY_SIGLIP)
FAMILIES = ("open_clip", "hf")

# Small enough for 2 CPU cores (~0.3 M visual params), same output dim as ViT-L/14 so shapes match the real encoder.
# Widths are multiples of 64 because OpenAI-format loading infers heads as width // 64.
TINY_CONFIG = {
    "embed_dim": FEATURE_DIM,
    "quick_gelu": True,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 64, "patch_size": 32, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}
# SigLIP's shape as open_clip builds ViT-SO400M-14-SigLIP-384 (a timm trunk without class token, MAP-pooled, no
# projection), at 64 px with 16 px patches (a 4×4 grid) and width 128: another width, input size and normalisation.
TIMM_TINY_SIGLIP = "vtl_tiny_siglip"
TINY_SIGLIP_CONFIG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "timm_model_name": TIMM_TINY_SIGLIP, "timm_model_pretrained": False,
                   "timm_pool": "map", "timm_proj": "none"},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 1, "layers": 1},
}
SIGLIP_PIXELS = PixelSpec(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "squash")


@dataclass(frozen=True)
class VisionShape:
    """A ViT's shape: output width, transformer width/depth/MLP width, patch and input size, tokens before the
    patches (a class token), and its parameter count when known exactly."""

    out_dim: int
    width: int
    layers: int
    mlp: int
    patch_size: int
    image_size: int
    prefix_tokens: int = 1
    params: int | None = None

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tokens(self) -> int:
        return self.grid ** 2 + self.prefix_tokens


def family(model: str) -> str:
    """`hf` for a local folder with a Hugging Face config.json, else `open_clip`."""
    return "hf" if (Path(model) / "config.json").is_file() else "open_clip"


def register_tiny_timm() -> None:
    """The timm trunk of `tiny-random-siglip`, registered once under TIMM_TINY_SIGLIP."""
    import timm
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer

    if timm.is_model(TIMM_TINY_SIGLIP):
        return

    def vtl_tiny_siglip(pretrained: bool = False, **kw):
        for name in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's loading options
            kw.pop(name, None)
        kw = {"img_size": 64, "patch_size": 16, "embed_dim": 128, "depth": 2, "num_heads": 2, "class_token": False,
              "global_pool": "map", **kw}
        return VisionTransformer(**kw)

    vtl_tiny_siglip.__module__ = __name__
    register_model(vtl_tiny_siglip)


def open_clip_config(name: str) -> dict:
    if name == TINY_RANDOM:
        return TINY_CONFIG
    if name == TINY_SIGLIP:
        return TINY_SIGLIP_CONFIG
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"--encoder {name}: not an open_clip model name nor a local Hugging Face folder "
                         "(open_clip.list_models() lists the names)")
    return cfg


def open_clip_pixels(name: str, pretrained: str | None) -> PixelSpec:
    """Size from the model config; mean/std/resize mode from the pretrained config (the given tag, else the model's
    first tag: a local weights file carries none), OpenAI's CLIP values when there is none."""
    if name == TINY_SIGLIP:
        return SIGLIP_PIXELS
    size = open_clip_config(name)["vision_cfg"].get("image_size", IMAGE_SIZE)
    if name == TINY_RANDOM:
        return PixelSpec(size)
    import open_clip

    tags = [pretrained] if pretrained else open_clip.list_pretrained_tags_by_model(name)[:1]
    pre = (open_clip.get_pretrained_cfg(name, tags[0]) if tags else None) or {}
    resize = "squash" if pre.get("resize_mode") == "squash" else "short_side"
    return PixelSpec(int(size if isinstance(size, int) else size[0]), tuple(pre.get("mean", CLIP_MEAN)),
                     tuple(pre.get("std", CLIP_STD)), resize)


def hf_vision_config(folder: str):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(folder)
    return getattr(cfg, "vision_config", None) or cfg


def hf_pixels(folder: str) -> PixelSpec:
    """From preprocessor_config.json: size (shortest_edge → short side + centre crop; height/width → squash)."""
    path = Path(folder) / "preprocessor_config.json"
    vision = hf_vision_config(folder)
    pre = json.loads(path.read_text()) if path.is_file() else {}
    size = pre.get("size", vision.image_size)
    mean, std = tuple(pre.get("image_mean", CLIP_MEAN)), tuple(pre.get("image_std", CLIP_STD))
    if isinstance(size, dict) and "shortest_edge" in size:
        return PixelSpec(int(size["shortest_edge"]), mean, std, "short_side")
    side = size.get("height", vision.image_size) if isinstance(size, dict) else size
    return PixelSpec(int(side), mean, std, "squash")


def pixels(model: str, pretrained: str | None = None) -> PixelSpec:
    return hf_pixels(model) if family(model) == "hf" else open_clip_pixels(model, pretrained)


def vision_shape(model: str) -> VisionShape:
    """The tower's shape from its configuration (a timm trunk is built on the meta device to read it)."""
    if family(model) == "hf":
        v = hf_vision_config(model)
        prefix = 0 if "siglip" in v.model_type else 1
        return VisionShape(v.hidden_size, v.hidden_size, v.num_hidden_layers, v.intermediate_size, v.patch_size,
                           v.image_size, prefix)
    cfg = open_clip_config(model)
    v = cfg["vision_cfg"]
    if v.get("timm_model_name"):
        return _timm_shape(cfg)
    width = v["width"]
    return VisionShape(cfg["embed_dim"], width, v["layers"], int(width * v.get("mlp_ratio", 4.0)), v["patch_size"],
                       int(v.get("image_size", IMAGE_SIZE)))


def _timm_shape(cfg: dict) -> VisionShape:
    import timm
    import torch

    v = cfg["vision_cfg"]
    if v["timm_model_name"] == TIMM_TINY_SIGLIP:
        register_tiny_timm()
    with torch.device("meta"):
        trunk = timm.create_model(v["timm_model_name"], pretrained=False, num_classes=0,
                                  img_size=v.get("image_size", IMAGE_SIZE))
    blocks = getattr(trunk, "blocks", [])
    mlp = blocks[0].mlp.fc1.out_features if len(blocks) else 4 * trunk.num_features
    out = cfg["embed_dim"] if v.get("timm_proj") not in (None, "none") else trunk.num_features
    return VisionShape(out, trunk.num_features, len(blocks), mlp, trunk.patch_embed.patch_size[0],
                       trunk.patch_embed.img_size[0], getattr(trunk, "num_prefix_tokens", 1),
                       sum(p.numel() for p in trunk.parameters()))


def estimate_params(s: VisionShape) -> int:
    """Parameters of a ViT: per layer attention (4·w²) and MLP (2·w·mlp), the patch embedding, positions, output
    projection (ViT-L/14: 12·24·1024² + … = 0.30 G, open_clip's count within 1 %)."""
    if s.params is not None:
        return s.params
    return (s.layers * (4 * s.width * s.width + 2 * s.width * s.mlp) + 3 * s.patch_size ** 2 * s.width
            + s.tokens * s.width + s.width * s.out_dim)
