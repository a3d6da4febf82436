"""Builders for the trainer tests: small training shards (our ShardWriter, random float16 features) and a tokenizer."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from pipeline.contract.shards import Sample, ShardWriter, write_index

WORDS = ("a man walks a dog along the river while a woman rides a red bike past the old bridge and children "
         "play with a ball on green grass near the tall trees").split()
DIM = 768


def caption(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))) + "."


def conversation(stage: int, rng: random.Random) -> dict:
    if stage == 1:
        turns = [{"from": "human", "value": "<video>\n"}, {"from": "gpt", "value": caption(rng)}]
        form = "caption"
    else:
        a, b = sorted(rng.sample(range(100), 2))
        turns = [{"from": "human", "value": f"<video>\nWhat happened from {a:02d} to {b:02d}?"},
                 {"from": "gpt", "value": caption(rng)},
                 {"from": "human", "value": f"When does {caption(rng)[:-1]} happen?"},
                 {"from": "gpt", "value": f"From {a:02d} to {b:02d}."}]
        form = "multi_turn"
    return {"turns": turns, "stage": stage, "form": form, "templates": [], "seed": None, "source": "build-qa"}


def write_training_shards(out: str | Path, n: int, stage: int = 1, per_shard: int = 8, rows: int = 8,
                          seed: int = 0, long_every: int = 0) -> Path:
    """`n` training samples in shards of `per_shard`; every `long_every`-th one has a very long answer."""
    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    out = Path(out)
    with ShardWriter(out, "train", samples_per_shard=per_shard) as writer:
        for i in range(n):
            conv = conversation(stage, rng)
            if long_every and i % long_every == long_every - 1:
                conv["turns"][1]["value"] = " ".join(["river"] * 3000)
            meta = {"key": f"s{i:05d}", "dataset": "synthetic", "source_id": f"v{i}", "media": "none", "kind": "video",
                    "window": None, "duration": 10.0, "fps": 10.0, "num_frames": 100, "frame_indices": [],
                    "frame_times": [], "events": [], "caption": conv["turns"][1]["value"], "encoder": "random"}
            feats = gen.standard_normal((rows, DIM)).astype(np.float16)
            writer.write(Sample(f"s{i:05d}", feats, meta, conv))
    write_index(out, writer.shards, encoder="random", num_frames=rows, dim=DIM, manifest_hash=None)
    return out


def tokenizer_for_tests():
    from train.model import prepare_tokenizer
    from train.tiny import train_tokenizer

    return prepare_tokenizer(train_tokenizer(WORDS + ["What happened from to When does happen"], vocab_size=300))
