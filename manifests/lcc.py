"""LLaVA's LCS-558K (`blip_laion_cc_sbu_558k.json`): `[{id, image, conversations}]` → one image row per record.

The caption is the first `gpt` turn (the human turn is one of LLaVA's "describe the image" prompts and is not kept);
`media` is the `image` path, under `--media-root` when given. The file is parsed record by record
(`manifests.jsonstream`), so its size does not bound memory. Stage 1 of VTimeLLM trains on exactly these pairs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from manifests.common import NO_CAPTION, NO_MEDIA, UNPARSABLE, resolve_named
from manifests.jsonstream import iter_array
from manifests.schema import ManifestRow, ReadResult, Rejection, collect, make_key

DATASET = "lcc"


def gpt_caption(conversations: list) -> str | None:
    for turn in conversations or ():
        if isinstance(turn, dict) and turn.get("from") == "gpt" and str(turn.get("value", "")).strip():
            return str(turn["value"]).strip()
    return None


def _row(i: int, rec: object, media_root: str | Path | None) -> ManifestRow | Rejection:
    if not isinstance(rec, dict) or not str(rec.get("id", "")).strip():
        return Rejection(f"record{i}", UNPARSABLE, "needs `id`, `image`, `conversations`")
    rid = str(rec["id"]).strip()
    if not rec.get("image"):
        return Rejection(rid, NO_MEDIA, "no `image`")
    caption = gpt_caption(rec.get("conversations"))
    if caption is None:
        return Rejection(rid, NO_CAPTION, "no non-empty `gpt` turn")
    return ManifestRow(key=make_key(rid), dataset=DATASET, kind="image",
                       media=resolve_named(media_root, str(rec["image"])), caption=caption, source_id=rid)


def stream_lcc(annotations: str | Path, durations: str | Path | None = None,
               media_root: str | Path | None = None, *, stats: dict) -> Iterator[ManifestRow | Rejection]:
    """Rows and rejections record by record (the file is parsed incrementally); `stats` is complete at the end."""
    if durations is not None:
        raise ValueError("lcc holds images; --durations is not used")
    n = rows = 0
    with open(annotations) as f:
        try:
            for i, rec in enumerate(iter_array(f)):
                n += 1
                out = _row(i, rec, media_root)
                rows += isinstance(out, ManifestRow)
                yield out
        except ValueError as exc:
            if isinstance(exc, json.JSONDecodeError):
                raise
            raise ValueError(f"{annotations}: expected a list of {{id, image, conversations}}") from None
    stats.update({"records_in": n, "rows": rows})


def read_lcc(annotations: str | Path, durations: str | Path | None = None,
             media_root: str | Path | None = None) -> ReadResult:
    stats: dict = {}
    return collect(stream_lcc(annotations, durations, media_root, stats=stats), stats)
