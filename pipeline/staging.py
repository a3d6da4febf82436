"""Local copies for the manifest command: annotation inputs fetched from an object store, the manifest written
locally then uploaded.

The manifest readers (in `manifests/`, below the storage layer) read local files; this module is the seam that lets
`vtl-pipeline manifest` take `s3://`/`gs://` URLs anyway: inputs are preflighted and copied to a temporary folder,
the provenance records the URLs they came from, and a remote `--out` receives the finished Parquet file and its
`.errors.jsonl` each in one upload. Local paths are made absolute (so manifests never hold relative media paths).

A folder in an object store (`--annotations s3://b/videos/` for the files reader, or `--media-root s3://b/videos/`)
is listed once and mirrored as a local "shadow" folder of empty files with the same relative names, so the readers
apply exactly the rules they apply to a local folder (sorted order, keys, extensions, alternative names, missing
media); `commit` then rewrites the shadow paths in the manifest, its errors and its provenance back to the URLs.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from infra import storage
from infra.preflight import preflight


@dataclass
class Staged:
    annotations: Path
    out: Path
    durations: Path | None
    media_root: Path | None
    origin: dict = field(default_factory=dict)
    remote_out: str | None = None
    shadows: dict[str, str] = field(default_factory=dict)
    """shadow folder → the object-store prefix it mirrors."""

    def commit(self, manifest: Path, errors: Path) -> tuple[str | Path, str | Path]:
        """Upload the finished files when --out is remote; returns where they are now."""
        if self.shadows:
            _unshadow(manifest, errors, self.shadows)
        if self.remote_out is None:
            return manifest, errors
        folder = storage.parent(self.remote_out)
        storage.upload(manifest, self.remote_out)
        storage.upload(errors, storage.join(folder, errors.name))
        return self.remote_out, storage.join(folder, errors.name)


@contextmanager
def staged_manifest(annotations: str, out: str, durations: str | None, media_root: str | None):
    folder = tempfile.mkdtemp(prefix="vtl-manifest-", dir=storage.spool_dir())
    try:
        staged = Staged(Path(folder), Path(storage.resolve(out)), None, None, origin := {})
        staged.annotations = Path(_input(annotations, "annotations", folder, origin, staged.shadows))
        if durations is not None:
            staged.durations = Path(_input(durations, "durations", folder, origin))
        if media_root is not None:
            staged.media_root = Path(_media_root(media_root, folder, staged))
        if storage.is_remote(out):
            staged.remote_out = storage.resolve(out)
            preflight(storage.parent(staged.remote_out), write=True, what="--out folder")
            staged.out = Path(folder) / storage.basename(out)
            origin["out"] = staged.remote_out
        yield staged
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _input(location: str, what: str, folder: str, origin: dict, shadows: dict | None = None) -> str:
    loc = storage.resolve(location)
    if not storage.is_remote(loc):
        return loc
    preflight(loc, what=what)
    origin[what] = loc
    if shadows is not None and not storage.isfile(loc):
        return _shadow(loc, what, folder, shadows)
    return storage.fetch(loc, folder)


def _media_root(location: str, folder: str, staged: Staged) -> str:
    loc = storage.resolve(location)
    if not storage.is_remote(loc):
        return loc
    preflight(loc, what="--media-root")
    staged.origin["media_root"] = loc
    return _shadow(loc, "--media-root", folder, staged.shadows)


def _shadow(url: str, what: str, folder: str, shadows: dict) -> str:
    """A local folder of empty files named as the objects under `url` (see the module docstring)."""
    names = storage.walk(url)
    if not names:
        raise storage.StorageError(f"{what} {url}: no file there and no object under it")
    root = os.path.realpath(tempfile.mkdtemp(prefix="shadow-", dir=folder))
    for name in names:
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        open(os.path.join(root, name), "wb").close()
    shadows[root] = url.rstrip("/")
    return root


def _unshadow(manifest: Path, errors: Path, shadows: dict[str, str]) -> None:
    """Shadow paths → URLs in the written manifest (rows, stats, provenance) and its errors file."""
    from manifests.schema import ManifestRow, ReadResult, Rejection, manifest_metadata, read_manifest, write_manifest

    def url(value):
        if isinstance(value, str):
            for root, prefix in shadows.items():
                value = value.replace(root, prefix)
            return value
        if isinstance(value, dict):
            return {k: url(v) for k, v in value.items()}
        return [url(v) for v in value] if isinstance(value, list) else value

    rows = [ManifestRow.from_json(url(r.to_json())) for r in read_manifest(manifest)]
    rejected = [Rejection(**url(json.loads(line))) for line in errors.read_text().splitlines() if line.strip()]
    meta = manifest_metadata(manifest)
    write_manifest(ReadResult(rows, rejected, meta.get("stats", {})), manifest, url(meta.get("provenance", {})))
