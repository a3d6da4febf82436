"""How decord reads a sample's frames: seeking (`get_batch`) or one forward pass keeping the sampled frames.

Both return exactly the frames at the indices of `pipeline.contract.timing.frame_indices` (tests/pipeline/extract/
test_read_plan.py decodes a clip both ways and compares every pixel); only the decoding work differs. decord's
`get_batch` decodes forward from where it is and seeks to a keyframe only when one lies between its position and the
next wanted frame, so seeking never decodes more frames than a forward pass; it pays for each seek (a decoder flush
and a demuxer seek) and for its per-index bookkeeping. A forward pass (`seek_accurate` to the first sampled frame,
then `skip_frames` / `next`) decodes every frame from the first sample's keyframe to the last sample.

`choose` compares the frames each way decodes, from the clip's keyframe index (`bench/bench_extract.py` measures
both on long clips with GOP 250 and GOP 30: dense keyframes make seeking skip most frames, sparse ones make both
decode about the same frames).
"""
from __future__ import annotations

import bisect

import numpy as np

SEEK = "seek"
SEQUENTIAL = "sequential"
SEQUENTIAL_MARGIN = 1.05
"""A forward pass is chosen when it decodes at most 5 % more frames than seeking would (what a seek costs, roughly,
on the long clips of the benchmark: GOP 250, one sample every 36 frames)."""


def decoded_frames(indices: list[int], key_indices: list[int]) -> tuple[int, int]:
    """(frames decoded seeking, frames decoded in one forward pass) for sorted `indices` and the keyframes."""
    if not indices:
        return 0, 0
    keys = sorted(key_indices) or [0]

    def key_before(i: int) -> int:
        return keys[max(bisect.bisect_right(keys, i) - 1, 0)]

    seek, pos = 0, -1  # pos: the next frame the decoder would return without seeking
    for i in indices:
        if i < pos:  # a repeated index (a clip shorter than the sample): the frame is already decoded
            continue
        start = key_before(i) if (pos < 0 or key_before(i) > pos) else pos
        seek += i - start + 1
        pos = i + 1
    forward = indices[-1] - key_before(indices[0]) + 1
    return seek, forward


def choose(indices: list[int], key_indices: list[int]) -> str:
    seek, forward = decoded_frames(indices, key_indices)
    return SEQUENTIAL if forward <= SEQUENTIAL_MARGIN * seek else SEEK


def read_forward(vr, indices: list[int]) -> np.ndarray:
    """uint8 (len(indices), H, W, 3): `seek_accurate` to the first index, then forward, converting only the wanted
    frames (decord's `skip_frames` decodes without the RGB copy)."""
    vr.seek_accurate(indices[0])
    pos, out, last = indices[0], [], None
    for i in indices:
        if i < pos:  # repeated index
            out.append(last)
            continue
        if i > pos:
            vr.skip_frames(i - pos)
        last = vr.next().asnumpy()
        out.append(last)
        pos = i + 1
    return np.stack(out)


def read(vr, indices: list[int], strategy: str | None = None) -> np.ndarray:
    """The frames at `indices` (sorted, as frame_indices returns them), by `strategy` or the cheaper one."""
    strategy = strategy or choose(indices, list(vr.get_key_indices()))
    if strategy == SEQUENTIAL:
        return read_forward(vr, indices)
    return vr.get_batch(list(indices)).asnumpy()
