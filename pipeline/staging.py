"""Local copies for the manifest command: annotation inputs fetched from an object store, the manifest written
locally then uploaded.

The manifest readers (in `manifests/`, below the storage layer) read local files; this module is the seam that lets
`vtl-pipeline manifest` take `s3://`/`gs://` URLs anyway: inputs are preflighted and copied to a temporary folder,
the provenance records the URLs they came from, and a remote `--out` receives the finished Parquet file and its
`.errors.jsonl` each in one upload. Local paths are made absolute (so manifests never hold relative media paths).
"""
from __future__ import annotations

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

    def commit(self, manifest: Path, errors: Path) -> tuple[str | Path, str | Path]:
        """Upload the finished files when --out is remote; returns where they are now."""
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
        staged = Staged(Path(_input(annotations, "annotations", folder, origin := {})), Path(storage.resolve(out)),
                        None, None, origin)
        if durations is not None:
            staged.durations = Path(_input(durations, "durations", folder, origin))
        if media_root is not None:
            if storage.is_remote(media_root):
                raise storage.StorageError(f"--media-root {media_root}: checking media in an object store is not "
                                           f"supported yet; leave it out (media URLs are stored as given)")
            staged.media_root = Path(storage.resolve(media_root))
        if storage.is_remote(out):
            staged.remote_out = storage.resolve(out)
            preflight(storage.parent(staged.remote_out), write=True, what="--out folder")
            staged.out = Path(folder) / storage.basename(out)
            origin["out"] = staged.remote_out
        yield staged
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _input(location: str, what: str, folder: str, origin: dict) -> str:
    loc = storage.resolve(location)
    if not storage.is_remote(loc):
        return loc
    preflight(loc, what=what)
    if not storage.isfile(loc):
        raise storage.StorageError(f"{what} {loc}: a folder in an object store cannot be read yet; list the media "
                                   f"(with their URLs) in a JSONL file for the files reader")
    origin[what] = loc
    return storage.fetch(loc, folder)
