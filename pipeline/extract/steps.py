"""The steps of extract and the small protocol every step follows (STYLE.md 1-2).

A step has a `name`, may load something once in `setup()`, and maps a batch of `Item`s to a batch of `Item`s. An
item that fails carries an `ErrorRecord` and is passed through untouched by later steps: a bad video is data. A step
marked `shared` holds a model; executors keep one instance per worker (the Ray executor: a pool of actors that all
tasks share). Steps never import ray and ask nothing of it: where the model runs, and what a task or a model copy
asks of Ray, is the run's `EncoderPlan` (pipeline/extract/encoder_plan.py).

The extract job is the list  decode → sample frames → preprocess → encode → write  (see `pipeline/extract/job.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.contract import timing
from pipeline.contract.shards import DURATION_MISMATCH, ErrorRecord, Sample, ShardWriter, write_errors
from pipeline.extract.decode import (
    MediaError,
    MediaSpool,
    VideoSource,
    check_shape,
    image_size,
    open_video,
    pts_frame_times,
    read_image,
)


@dataclass
class Item:
    """One manifest row on its way through the steps."""

    row: dict
    local: str | None = None  # the media file on this machine (a spooled copy when the manifest has a URL)
    source: VideoSource | None = None
    frames: np.ndarray | None = None
    pixels: np.ndarray | None = None
    features: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    error: ErrorRecord | None = None

    @property
    def key(self) -> str:
        return self.row["key"]


class Step:
    """Base step: `process` one item; items already failed pass through; a MediaError becomes the item's error."""

    name = "step"
    shared = False

    def setup(self) -> None:
        """Load what the step needs once per worker (a model, a reader pool)."""

    def open_task(self, task_id: int) -> None:
        """Called before a task's first batch."""

    def close_task(self) -> dict:
        """Called after a task's last batch; returns what the step wants recorded in the task's marker."""
        return {}

    def process(self, item: Item) -> Item:
        """Map one item; every concrete step defines it (the base class is never run on its own)."""
        raise TypeError(f"{type(self).__name__} does not define process()")

    def __call__(self, items: list[Item]) -> list[Item]:
        for item in items:
            if item.error is None:
                try:
                    self.process(item)
                except MediaError as e:
                    item.error = ErrorRecord(item.key, self.name, e.reason, e.detail, item.row.get("source_id"))
                    item.source = item.frames = item.pixels = None
        return items


class Decode(Step):
    """Open the media: decord (PyAV fallback) for videos, a header check for images.

    Media in an object store is first copied to a local spool (decord needs a local file); the previous call's
    copies are removed when the next call starts (their frames are decoded by then; `run_task` calls the CPU steps
    one row at a time, so at most one video is spooled), the rest when the task ends.
    """

    name = "decode"

    def __init__(self, threads: int = 1):
        self.threads = threads
        self.spool = MediaSpool()

    def setup(self) -> None:
        import decord  # noqa: F401  (a worker pays the import once, before its first task)

    def __call__(self, items: list[Item]) -> list[Item]:
        self.spool.release()
        return super().__call__(items)

    def close_task(self) -> dict:
        self.spool.close()
        return {}

    def process(self, item: Item) -> Item:
        item.local = self.spool.local(item.row["media"])
        if item.row["kind"] == "video":
            item.source = open_video(item.local, threads=self.threads)
        else:
            image_size(item.local)
        return item


class SampleFrames(Step):
    """The frames the time contract asks for (pipeline.contract.timing.sample_indices under the run's rule:
    `sampling` holds its keyword arguments, default VTimeLLM's 100 uniform frames), and the sample's meta.json."""

    name = "sample_frames"

    def __init__(self, fast_resize: bool = False, pixels=None, sampling: dict | None = None):
        from pipeline.extract.pixels import DEFAULT_PIXELS

        self.fast_resize = fast_resize
        self.pixels = pixels or DEFAULT_PIXELS
        self.sampling = sampling or {}

    def process(self, item: Item) -> Item:
        row = item.row
        if row["kind"] == "image":
            media = item.local or row["media"]
            size = self.pixels.decoder_size(*image_size(media)) if self.fast_resize else None
            item.frames = read_image(media, size)
            item.meta = sample_meta(row, fps=None, num_frames=1, indices=[0], times=[0.0], decoder="pil")
            return item
        src, window = item.source, row.get("window")
        try:
            indices = timing.sample_indices(src.num_frames, src.fps, tuple(window) if window else None,
                                            **self.sampling)
        except ValueError as e:
            raise MediaError("window_outside_file", str(e)) from e
        if self.fast_resize:  # the decoder resizes: its output size must be bounded before it reads
            check_shape(*src.frame_shape(), "the video's frame")
        size = self.pixels.decoder_size(*src.frame_shape()) if self.fast_resize else None
        item.frames = src.read(indices, size)
        check_shape(*item.frames.shape[1:3], "the video's frame")  # before Preprocess resizes them
        item.meta = sample_meta(row, fps=src.fps, num_frames=src.num_frames, indices=indices,
                                times=pts_frame_times(src, indices) or timing.frame_times(indices, src.fps),
                                decoder=src.decoder)
        item.source = None  # decoder handles stay in this process; items may travel to an encoder actor
        return item


def sample_meta(row: dict, *, fps: float | None, num_frames: int, indices: list[int], times: list[float],
                decoder: str) -> dict:
    """meta.json of a sample (pipeline.contract.shards.META_FIELDS + decoder). The manifest's duration is the annotations'
    time base and wins; without one, the window's length, else the decoded file's num_frames / fps. When that duration
    and the decoded length of the media disagree (pipeline.contract.timing.duration_mismatch), `duration_mismatch`
    records both."""
    window = row.get("window")
    window = [float(window[0]), float(window[1])] if window else None
    duration = row.get("duration")
    if duration is None and row["kind"] == "video":
        duration = window[1] - window[0] if window else (num_frames / fps if fps else None)
    meta = {
        "key": row["key"], "dataset": row["dataset"], "source_id": row.get("source_id"), "media": row["media"],
        "kind": row["kind"], "window": window, "duration": duration, "fps": fps, "num_frames": num_frames,
        "frame_indices": [int(i) for i in indices], "frame_times": [float(t) for t in times],
        "events": [{"start": e["start"], "end": e["end"], "caption": e["caption"]} for e in row.get("events") or ()],
        "caption": row.get("caption"), "encoder": None, "decoder": decoder,
    }
    if row["kind"] == "video":  # a window past the file's end, or an annotated duration the file does not have
        flag = timing.duration_mismatch(duration, timing.decoded_span(num_frames, fps, window))
        if flag:
            meta[DURATION_MISMATCH] = flag
    return meta


class Preprocess(Step):
    """uint8 frames → what the encoder is sent, on the decode side, where the cores are.

    Default path: CLIP input pixels (N, 3, 224, 224) in `dtype`, the encoder model's own dtype (float16 for a GPU
    encoder, which casts to it anyway: half the bytes of float32 in the object store, same features). Fast path
    (the decoder resized): uint8 centre crops, normalised by the encoder (a quarter of the float32 bytes).
    """

    name = "preprocess"

    def __init__(self, fast_resize: bool = False, dtype: str = "float32", pixels=None):
        from pipeline.extract.pixels import DEFAULT_PIXELS

        self.fast_resize = fast_resize
        self.dtype = dtype
        self.pixels = pixels or DEFAULT_PIXELS

    def setup(self) -> None:
        import torch  # noqa: F401  (seconds on a cold worker; the preprocess path needs no torchvision)

    def process(self, item: Item) -> Item:
        import torch

        from pipeline.extract.pixels import center_crop_uint8, preprocess

        if self.fast_resize:
            item.pixels = center_crop_uint8(item.frames, self.pixels.size)
        else:
            item.pixels = preprocess(item.frames, dtype=getattr(torch, self.dtype), spec=self.pixels).numpy()
        item.frames = None
        return item


class Encode(Step):
    """The encoder's rows for every frame of a batch of items (`tokens_per_frame` each), `batch_size` frames per
    forward pass (the plan's)."""

    name = "encode"
    shared = True

    def __init__(self, clip_config, batch_size: int, encoder: str):
        self.clip_config = clip_config
        self.batch_size = batch_size
        self.encoder = encoder
        self.model = None
        self.pixels = None  # the encoder's pixel spec, read from its config in setup()

    def setup(self) -> None:
        from pipeline.extract.clip import load_model

        if self.model is None:
            self.model = load_model(self.clip_config)
        self.pixels = self.clip_config.pixel_spec

    def __call__(self, items: list[Item]) -> list[Item]:
        from pipeline.extract.clip import encode

        ok = [i for i in items if i.error is None]
        if ok:
            cfg = self.clip_config
            k = cfg.tokens_per_frame
            feats = encode(self.model, [i.pixels for i in ok], self.batch_size, k, self.pixels)
            start = 0
            for item in ok:
                n = len(item.pixels) * k
                item.features, item.pixels = feats[start:start + n], None
                item.meta["encoder"] = self.encoder
                start += n
        return items

    def __getstate__(self) -> dict:
        # A loaded model never travels: workers load their own in setup().
        return {**self.__dict__, "model": None}


class Write(Step):
    """Samples into the task's shards (`task-00007-000000.tar`), failed items into the task's error file."""

    name = "write"

    def __init__(self, store, samples_per_shard: int):
        # `store`: the run folder's TaskStore (pipeline/extract/tasks.py), which names the task's files.
        self.store = store
        self.samples_per_shard = samples_per_shard
        self.writer: ShardWriter | None = None

    def open_task(self, task_id: int) -> None:
        self.writer = ShardWriter(self.store.out, self.store.shard_prefix(task_id), self.samples_per_shard)
        self.errors_path = self.store.errors_file(task_id)
        self.errors: list[ErrorRecord] = []

    def __call__(self, items: list[Item]) -> list[Item]:
        for item in items:
            if item.error is None:
                self.writer.write(Sample(item.key, item.features, item.meta))
                item.features = None
        self.errors += [i.error for i in items if i.error is not None]
        return items

    def close_task(self) -> dict:
        shards = self.writer.close()
        self.writer = None
        if self.errors:  # one file per task, committed whole before the task's marker
            write_errors(self.errors_path, self.errors)
        return {"shards": [{**s.to_index(), "keys": s.keys} for s in shards], "errors": len(self.errors)}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "writer": None}
