"""Fixtures' building blocks for the extract tests: generated media, manifests, accounting checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from infra import storage
from manifests.schema import Event, ManifestRow, ReadResult, write_manifest
from pipeline.contract.shards import iter_samples, read_errors, read_index
from pipeline.extract.clip import ClipConfig
from pipeline.extract.job import ExtractConfig
from pipeline.synth.media import frame_counter_video

TINY = ClipConfig(model="tiny-random")


def make_media(d: Path) -> dict[str, Path]:
    """Small generated videos (frame i's left half has grey level (7·i) mod 256), an image, broken files."""
    d.mkdir(parents=True, exist_ok=True)
    media = {
        "v60": frame_counter_video(d / "v60.mp4", 60, 10.0),
        "v150": frame_counter_video(d / "v150.mp4", 150, 25.0),
        "v37": frame_counter_video(d / "v37.mp4", 37, 12.0),
    }
    from PIL import Image

    rgb = np.random.RandomState(0).randint(0, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(d / "im.png")
    media["im"] = d / "im.png"
    (d / "corrupt.mp4").write_bytes(b"\x00\x01not a video" * 100)
    media["corrupt"] = d / "corrupt.mp4"
    data = media["v150"].read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    media["truncated"] = d / "truncated.mp4"
    return media


def good_rows(media: dict[str, Path], dataset: str = "synth") -> list[ManifestRow]:
    return [
        ManifestRow(key="whole60", dataset=dataset, kind="video", media=str(media["v60"])),
        ManifestRow(key="whole150", dataset=dataset, kind="video", media=str(media["v150"]), duration=6.0,
                    events=(Event(1.0, 2.5, "the grey gets lighter"),), caption="a test", source_id="src150"),
        ManifestRow(key="win150", dataset=dataset, kind="video", media=str(media["v150"]), window=(1.5, 4.2)),
        ManifestRow(key="whole37", dataset=dataset, kind="video", media=str(media["v37"])),
        ManifestRow(key="image", dataset=dataset, kind="image", media=str(media["im"])),
    ]


def bad_rows(media: dict[str, Path], d: Path) -> list[ManifestRow]:
    return [
        ManifestRow(key="missing", dataset="synth", kind="video", media=str(d / "does-not-exist.mp4")),
        ManifestRow(key="corrupt", dataset="synth", kind="video", media=str(media["corrupt"])),
        ManifestRow(key="outside", dataset="synth", kind="video", media=str(media["v60"]), window=(30.0, 40.0)),
        ManifestRow(key="missing_image", dataset="synth", kind="image", media=str(d / "nope.jpg")),
        # http(s) media is kept by `manifest` for `download`; extract records it as an error, never fails its task
        ManifestRow(key="remote", dataset="synth", kind="video", media="http://127.0.0.1:9/v.mp4"),
    ]


def write_rows(rows: list[ManifestRow], path: Path) -> Path:
    return write_manifest(ReadResult(rows=rows), path, {"test": "extract"})


def config(manifest: Path | str, out: Path | str, **kw) -> ExtractConfig:
    kw.setdefault("clip", TINY)
    kw.setdefault("progress", False)
    return ExtractConfig(manifest=str(manifest), out=str(out), **kw)


def accounting(out: Path | str) -> tuple[dict, list]:
    """Samples by key (asserting none is duplicated) and the error records."""
    samples = {}
    for s in iter_samples(out):
        assert s.key not in samples, f"duplicate sample {s.key}"
        samples[s.key] = s
    errors = read_errors(out)
    assert not set(samples) & {e.key for e in errors}, "a row is both a sample and an error"
    index = read_index(out)
    assert index["totals"]["samples"] == len(samples)
    assert index["totals"]["errors"] == len(errors)
    return samples, errors


def assert_exact(out: Path | str, rows: list[ManifestRow]) -> tuple[dict, list]:
    samples, errors = accounting(out)
    keys = sorted(list(samples) + [e.key for e in errors])
    assert keys == sorted(r.key for r in rows), "every manifest row exactly once in shards or errors"
    leftovers = [name for name in storage.listdir(out) if name.endswith(".tmp")]
    assert not leftovers
    return samples, errors


def upload_media(media: dict[str, Path], prefix: str) -> dict[str, str]:
    """The same media under an object-store prefix (for the s3:// tests): name → URL."""
    urls = {}
    for name, path in media.items():
        urls[name] = storage.join(prefix, path.name)
        storage.upload(path, urls[name])
    return urls
