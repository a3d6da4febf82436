"""`extract_one`: the features of one video or image with extract's own steps, in this process (for vtl-chat and
the eval helpers). Same decoding, frame sampling, preprocessing and encoder as a run, so a file gives the features
a run over a manifest holding it would; the encoder loads once per configuration and is kept for later calls.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.extract.clip import ClipConfig, encoder_id
from pipeline.extract.config import BATCH_SIZE
from pipeline.extract.decode import MediaError
from pipeline.extract.steps import Decode, Encode, Item, Preprocess, SampleFrames

_ENCODERS: dict = {}  # (ClipConfig, batch size) → its loaded Encode step, for this process's later calls


def extract_one(media_path: str | os.PathLike, clip_config: ClipConfig, window: tuple[float, float] | None = None,
                *, batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, dict]:
    """Features of one video or image with the extract steps, in this process: (float16 (N·K, D), meta dict).

    N = the config's frame rule (default 100) for a video (optionally inside `window` seconds), 1 for an image (by its suffix, as manifests tell
    them apart). Bad media raises `pipeline.extract.decode.MediaError` (with `.reason`).
    """
    from manifests.common import IMAGE_EXTS
    from manifests.schema import ManifestRow, make_key

    path = str(media_path)
    kind = "image" if Path(path).suffix.lower() in IMAGE_EXTS else "video"
    row = ManifestRow(key=make_key(Path(path).stem), dataset="user", kind=kind, media=path,
                      window=tuple(window) if window else None).to_json()
    encode = _ENCODERS.get((clip_config, batch_size))
    if encode is None:
        encode = Encode(clip_config, batch_size, encoder_id(clip_config))
        encode.setup()
        _ENCODERS[clip_config, batch_size] = encode
    items = [Item(row=row)]
    pixels = clip_config.pixel_spec
    steps = (Decode(), SampleFrames(clip_config.fast_resize, pixels, clip_config.sampling),
             Preprocess(clip_config.fast_resize, pixels=pixels), encode)
    for step in steps:
        items = step(items)
    item = items[0]
    if item.error is not None:
        raise MediaError(item.error.reason, item.error.detail)
    return item.features, item.meta
