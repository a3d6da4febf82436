"""Tiny Hugging Face vision towers saved to a folder, built in the test (no downloads)."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def hf_tower(folder: Path, kind: str = "clip") -> Path:
    """A seeded-random CLIPVisionModel (32 px, 8 px patches, short side + centre crop) or SiglipVisionModel (32 px,
    squash, mean/std 0.5), width 64, with its preprocessor_config.json."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "image_size": 32, "patch_size": 8}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if kind == "clip":
            model = CLIPVisionModel(CLIPVisionConfig(**shape))
            pre = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32},
                   "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
        else:
            model = SiglipVisionModel(SiglipVisionConfig(**shape))
            pre = {"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    return folder
