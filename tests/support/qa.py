"""Test helpers for build-qa and import-vtimellm: feature-shard folders written with our own ShardWriter (random
features, contract meta with events), and a small tokenizer trained in-process for the token-budget check."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.contract.shards import Sample, ShardWriter, read_index, write_index


def video_meta(key: str, duration: float, events: list[dict], caption: str | None = None, kind: str = "video",
               rows: int = 100) -> dict:
    """A meta.json with every contract field, as extract writes it (fps 10, linspace frame indices)."""
    fps = 10.0
    n = max(int(duration * fps), 1)
    idx = [int(i * (n - 1) / (rows - 1)) if rows > 1 else 0 for i in range(rows)]
    return {"key": key, "dataset": "test", "source_id": key, "media": f"/videos/{key}.mp4", "kind": kind,
            "window": None, "duration": duration, "fps": fps, "num_frames": n, "frame_indices": idx,
            "frame_times": [i / fps for i in idx], "events": events, "caption": caption,
            "encoder": "test-random", "decoder": "test"}


def write_feature_shards(out: Path, metas: list[dict], dim: int = 768, seed: int = 0,
                         samples_per_shard: int = 4) -> dict[str, np.ndarray]:
    """Write a feature-shard folder (shards + index.json) for `metas`; returns the features by key."""
    rng = np.random.default_rng(seed)
    feats = {}
    with ShardWriter(out, "feat", samples_per_shard) as writer:
        for meta in metas:
            rows = 1 if meta["kind"] == "image" else len(meta["frame_indices"])
            f = rng.standard_normal((rows, dim)).astype(np.float16)
            feats[meta["key"]] = f
            writer.write(Sample(key=meta["key"], features=f, meta=meta))
    write_index(out, writer.shards, encoder="test-random", num_frames=100, dim=dim, manifest_hash="test")
    return feats


def anet_metas(path: str | Path, count: int) -> list[dict]:
    """The first `count` videos of an ActivityNet Captions json as feature-shard metas (events as published)."""
    data = json.loads(Path(path).read_text())
    metas = []
    for vid in list(data)[:count]:
        v = data[vid]
        events = [{"start": s, "end": e, "caption": c} for (s, e), c in zip(v["timestamps"], v["sentences"])]
        metas.append(video_meta(vid, float(v["duration"]), events))
    return metas


def train_tokenizer(out: Path, texts: list[str]) -> Path:
    """A tiny word-level tokenizer (with BOS) saved as a Hugging Face tokenizer folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>"]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(str(out))
    return out


def shard_hashes(folder: Path) -> list[tuple[str, str]]:
    return [(s["name"], s["sha256"]) for s in read_index(folder)["shards"]]
