"""`vtl-pipeline synth`: a synthetic grounding dataset with known answers, in the formats of the real sources.

    OUT/videos/synth_0000.mp4 …                 H.264, SIZE×SIZE, fps from --fps, lengths --min/--max-duration
    OUT/annotations/train.json, test.json       ActivityNet Captions format {vid: {duration, timestamps, sentences}}
    OUT/images/000000000.png …                  stage-1 images, one event each
    OUT/annotations/blip_laion_cc_sbu_558k.json LLaVA pre-training format [{id, image, conversations}] (image
                                                paths relative to OUT/images)
    OUT/annotations/stage3.json                 VTimeLLM stage-3 format, dialogues templated from the train events
    OUT/synth_info.json                         seed, counts, generator version, config (written last)

Everything is drawn from `numpy.random.default_rng` seeded per item ([seed, item]), so a seed gives the same
dataset whatever the count, and the split is by video.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from infra.storage import write_json_atomic
from pipeline.contract.provenance import producer
from pipeline.synth.dialogue import dialogues_for
from pipeline.synth.media import (
    BACKGROUND,
    COLOURS,
    IMAGE_CAPTIONS,
    SHAPES,
    SynthEvent,
    caption_of,
    paint,
    random_video,
    render_events,
    write_video,
)

SYNTH_VERSION = 1
IMAGE_PROMPTS = ("Describe the image briefly.", "Give a short caption of the picture.",
                 "What is shown in this image?", "Write a terse summary of the image.")


@dataclass(frozen=True)
class SynthConfig:
    """Options of `vtl-pipeline synth`, one field per CLI option."""

    out: Path
    """Output folder (must be empty or absent unless overwrite)."""
    videos: int = 64
    """Number of videos (train + test)."""
    seed: int = 0
    """Seed of everything drawn."""
    images: int = 256
    """Stage-1 images (one event each)."""
    test_fraction: float = 0.25
    """Share of videos held out for evaluation (at least one video on each side)."""
    min_duration: float = 4.0
    """Shortest video, seconds."""
    max_duration: float = 40.0
    """Longest video, seconds."""
    fps: tuple[float, ...] = (10.0, 15.0, 24.0, 30.0)
    """Frame rates drawn from."""
    size: int = 64
    """Frame width and height in pixels (even, for yuv420p)."""
    dialogues_per_video: int = 2
    """Stage-3 dialogues per train video (VTimeLLM has two)."""
    gap_scale: float = 1.0
    """Multiplies the weight of the gaps between events: 1 lets events cover ~75 % of a video; larger values make
    events shorter relative to the video (the demo uses 12, so a whole-video guess scores low)."""
    events: tuple[int, int] | None = None
    """Least and most events per video, drawn uniformly; None: 2–4 (2 in videos shorter than 8 s). The CPU demo uses
    (1, 1): a tiny LLM trained from scratch learns where one event is in a few hundred steps, but needs thousands to
    learn which of several events a caption names (docs/synth.md)."""
    overwrite: bool = False
    """Write into a non-empty folder."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "fps", tuple(float(f) for f in self.fps))
        if self.videos < 2:
            raise ValueError("--videos must be ≥ 2 (one train and one test video at least)")
        if self.images < 0 or self.dialogues_per_video < 0:
            raise ValueError("--images and --dialogues-per-video must be ≥ 0")
        if not 0 < self.test_fraction < 1:
            raise ValueError("--test-fraction must be in (0, 1)")
        if not 2.0 <= self.min_duration <= self.max_duration:
            raise ValueError("need 2 ≤ --min-duration ≤ --max-duration (seconds)")
        if not self.fps or min(self.fps) <= 0:
            raise ValueError("--fps must list positive frame rates")
        if not 0.1 <= self.gap_scale <= 20:
            raise ValueError("--gap-scale must be within [0.1, 20]")
        if self.events is not None:
            object.__setattr__(self, "events", (int(self.events[0]), int(self.events[1])))
            if not 1 <= self.events[0] <= self.events[1] <= len(COLOURS):
                raise ValueError(f"--events must be N or LEAST-MOST with 1 ≤ LEAST ≤ MOST ≤ {len(COLOURS)}")
        if self.size < 16 or self.size % 2:
            raise ValueError("--size must be even and ≥ 16")
        if self.out.exists() and any(self.out.iterdir()) and not self.overwrite:
            raise ValueError(f"{self.out} is not empty (pass --overwrite to write into it)")


@dataclass(frozen=True)
class VideoPlan:
    index: int
    vid: str
    fps: float
    num_frames: int
    events: tuple[SynthEvent, ...]

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    def annotation(self) -> dict:
        return {"duration": round(self.duration, 4), "timestamps": [[e.start, e.end] for e in self.events],
                "sentences": [e.caption for e in self.events]}


def plan_videos(cfg: SynthConfig) -> list[VideoPlan]:
    plans = []
    for i in range(cfg.videos):
        rng = np.random.default_rng([cfg.seed, 0, i])
        fps, n, events = random_video(rng, cfg.min_duration, cfg.max_duration, cfg.fps, cfg.gap_scale,
                                      cfg.events)
        plans.append(VideoPlan(i, f"synth_{i:04d}", fps, n, tuple(events)))
    return plans


def split_videos(cfg: SynthConfig, plans: list[VideoPlan]) -> tuple[list[VideoPlan], list[VideoPlan]]:
    order = np.random.default_rng([cfg.seed, 1]).permutation(len(plans))
    n_test = min(max(1, round(len(plans) * cfg.test_fraction)), len(plans) - 1)
    test = set(order[:n_test].tolist())
    return ([p for i, p in enumerate(plans) if i not in test], [p for i, p in enumerate(plans) if i in test])


def write_images(cfg: SynthConfig) -> list[dict]:
    """PNG images of single events and their LLaVA-format records."""
    from PIL import Image

    folder = cfg.out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for j in range(cfg.images):
        rng = np.random.default_rng([cfg.seed, 2, j])
        shape, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
        frame = np.empty((cfg.size, cfg.size, 3), np.uint8)
        frame[:] = BACKGROUND
        paint(frame, shape, colour, float(rng.uniform()))
        rid = f"{j:09d}"
        Image.fromarray(frame).save(folder / f"{rid}.png", optimize=False)
        prompt = str(rng.choice(IMAGE_PROMPTS))
        human = f"<image>\n{prompt}" if rng.uniform() < 0.5 else f"{prompt}\n<image>"   # LLaVA puts it either side
        records.append({"id": rid, "image": f"{rid}.png", "conversations": [
            {"from": "human", "value": human}, {"from": "gpt", "value": caption_of(IMAGE_CAPTIONS[shape], colour)}]})
    return records


def generate(cfg: SynthConfig) -> dict:
    """Write the whole dataset; returns what synth_info.json holds."""
    plans = plan_videos(cfg)
    train, test = split_videos(cfg, plans)
    for p in plans:
        write_video(cfg.out / "videos" / f"{p.vid}.mp4", render_events(list(p.events), p.num_frames, p.fps, cfg.size),
                    p.fps)
    ann = cfg.out / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("test", test)):
        write_json_atomic(ann / f"{name}.json", {p.vid: p.annotation() for p in part})
    images = write_images(cfg)
    write_json_atomic(ann / "blip_laion_cc_sbu_558k.json", images)
    dialogues = [d for p in train for d in dialogues_for(p.vid, p.duration, p.events, cfg.dialogues_per_video,
                                                         np.random.default_rng([cfg.seed, 3, p.index]))]
    write_json_atomic(ann / "stage3.json", dialogues)
    info = {
        "generator": {"name": "vtl-pipeline synth", "version": SYNTH_VERSION}, "producer": producer(),
        "seed": cfg.seed,
        "counts": {"videos": len(plans), "train": len(train), "test": len(test),
                   "events": sum(len(p.events) for p in plans), "frames": sum(p.num_frames for p in plans),
                   "images": len(images), "dialogues": len(dialogues)},
        "files": {"videos": "videos", "train": "annotations/train.json", "test": "annotations/test.json",
                  "images": "images", "image_captions": "annotations/blip_laion_cc_sbu_558k.json",
                  "stage3": "annotations/stage3.json"},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
    }
    write_json_atomic(cfg.out / "synth_info.json", info)
    return info
