"""Helpers for the eval tests: a tiny random checkpoint through the trainer's API, and evaluation shards."""
from __future__ import annotations

import types
from pathlib import Path

import numpy as np

from pipeline.contract.shards import Sample, ShardWriter, write_index
from pipeline.qa.rules import eval_conversation

TEXTS = ["During which frames can we see a man opening a door?", "From 00 to 24, a man walks in. From 25 to 99, "
         "he sits down.", "a person is putting a book on a shelf", "the person pours some water into the glass",
         'Could you please describe the events in the video in detail? {"event": "xx", "timestamps": "from xx to xx"}']
VIDEOS = {  # key: (duration, events as (start, end, caption))
    "vidA": (30.0, [(0.0, 12.0, "A man opens a door."), (12.0, 30.0, "He sits down on a chair.")]),
    "vidB": (20.0, [(2.0, 8.5, "A person is putting a book on a shelf."), (8.0, 19.0, "The person pours water.")]),
    "vidC": (45.0, [(10.0, 44.0, "Someone plays the guitar.")]),
}


def tiny_checkpoint(out: Path, seed: int = 0) -> Path:
    """A stage-1 tiny-random checkpoint saved with the trainer's own functions (prepare_stage1 + save_checkpoint),
    in the `v1` format so the eval prompts are the Vicuna ones."""
    from train.checkpoint import save_checkpoint
    from train.stages import prepare_stage1

    cfg = types.SimpleNamespace(stage=1, llm="tiny-random", out=str(out), seed=seed, conv_format="v1", attn="sdpa",
                                shards=None, resume=False, from_checkpoint=None)
    model = prepare_stage1(cfg, texts=TEXTS * 10)
    return save_checkpoint(model, out, stage=1, config={"made_by": "tests/support/evaluation.py"})


def many_videos(n: int) -> dict:
    """`n` videos in the layout of VIDEOS (two events each), for runs long enough to interrupt."""
    return {f"vid{i:03d}": (20.0 + i % 7, [(0.0, 6.0 + i % 5, f"A person does thing {i}."),
                                            (5.0, 18.0, f"Someone else does thing {i + 1}.")]) for i in range(n)}


def eval_shards(out: Path, benchmark: str, dim: int = 768, frames: int = 100, old_keys: bool = False,
                videos: dict | None = None) -> Path:
    """Evaluation shards in the build-qa `--benchmark` layout (conversation from build-qa's own rule); `old_keys`
    writes the records as shards built before the glossary rename did (`"stage": "eval", "task": BENCHMARK`);
    `videos` replaces VIDEOS."""
    gen = np.random.default_rng(0)
    with ShardWriter(out, f"eval-{benchmark}", samples_per_shard=2) as writer:
        for key, (duration, events) in (VIDEOS if videos is None else videos).items():
            ev = [{"start": s, "end": e, "caption": c} for s, e, c in events]
            conv, _ = eval_conversation(benchmark, key, ev)
            if old_keys:
                conv = {"stage": "eval", "task": conv.pop("benchmark"), **conv}
            meta = {"key": key, "dataset": "synthetic", "source_id": f"src_{key}", "media": "none", "kind": "video",
                    "window": None, "duration": duration, "fps": 10.0, "num_frames": int(duration * 10),
                    "frame_indices": [], "frame_times": [], "events": ev, "caption": None, "encoder": "random"}
            writer.write(Sample(key, gen.standard_normal((frames, dim)).astype(np.float16), meta, conv))
    write_index(out, writer.shards, encoder="random", num_frames=frames, dim=dim, manifest_hash=None)
    return out
