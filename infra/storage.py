"""The one storage layer: every file we read or write goes through here, on local disk or in an object store.

A *location* is a plain string: a local path, a `file://` URL, or an object-store URL (`s3://bucket/key`,
`gs://bucket/key`). It stays a string everywhere (a URL is never made a `Path`: `Path("s3://b/x")` is `s3:/b/x`).
`resolve` makes a local path absolute on the driver before it is stored in a manifest, plan or run config or
shipped to a worker (Ray workers run in whatever folder their node's `ray start` ran in). Any other scheme is a
`StorageError` naming it.

Files are reached through fsspec (s3fs, gcsfs), which is imported on first use, not at import time. Credentials and
endpoints come only from each store's standard configuration: for S3 the AWS_* environment variables (including
`AWS_ENDPOINT_URL` for an S3-compatible server such as MinIO or moto), `AWS_PROFILE` and the shared config files.
We never take them from our own options: they would end up in `run_config.json`.

Committing a finished file (`AtomicFile`, `write_bytes_atomic`) never shows a reader half a file:
- local disk: write `.{name}.tmp` beside the target, fsync, `os.replace` (atomic within one file system);
- object store: the file is written to a local spool file, then uploaded with one `put` of the finished object.
  An S3/GCS object becomes visible only when its upload completes (a single PUT, or the CompleteMultipartUpload
  of a large one), so no reader ever sees a partial object under the final key. We do not write a temporary key
  and copy + delete it: object stores have no rename, so that costs a second full copy of every shard on the
  server, and a crash between copy and delete leaves stray temporary keys to clean up.

Bookkeeping JSON (index, run config, plans, markers, metrics) is standard JSON: NaN and ±Infinity become null
(`json_text`), since most readers other than Python's refuse them. A local commit fsyncs the file before the rename
and the folder after it, so after a power loss a file is either absent or whole.
"""
from __future__ import annotations

import builtins
import json
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from infra.locations import (  # noqa: F401  (re-exported: callers take location helpers from the storage layer)
    OBJECT_SCHEMES,
    SCHEME_RE,
    StorageError,
    basename,
    check_object_path,
    is_remote,
    join,
    local_path,
    parent,
    resolve,
    scheme,
)

SPOOL_ENV = "VTL_SPOOL_DIR"
_FS_CACHE: dict = {}


def filesystem(location: str | os.PathLike):
    """(fsspec filesystem, path inside it). One instance per scheme, AWS_*/GOOGLE_* environment and process."""
    name = scheme(location)
    if not name:
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), local_path(location)
    check_object_path(location)
    # Keyed by process too: an async client made before a fork (DataLoader workers) must not be used after it.
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_", "GCS"))))
    key = (name, env, os.getpid())
    fs = _FS_CACHE.get(key)
    if fs is None:
        fs = _FS_CACHE[key] = _open_fs(name)
    return fs, str(location).split("://", 1)[1]


def _open_fs(name: str, **kwargs):
    import fsspec

    if name == "s3":
        # Other processes (Ray workers, a rerun) write the same prefixes: never answer from a cached listing.
        kwargs.setdefault("use_listings_cache", False)
    try:
        return fsspec.filesystem(name, skip_instance_cache=True, **kwargs)
    except ImportError as e:
        raise StorageError(f"{name}:// needs {'s3fs' if name == 's3' else 'gcsfs'} installed: {e}") from e


def open(location: str | os.PathLike, mode: str = "rb", **kwargs):  # noqa: A001 (the storage layer's open)
    fs, path = filesystem(location)
    if not is_remote(location) and ("w" in mode or "a" in mode):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return fs.open(path, mode, **kwargs)


def read_bytes(location: str | os.PathLike, start: int | None = None, end: int | None = None) -> bytes:
    """The file's bytes, or bytes [start, end) of it (a ranged GET on an object store)."""
    fs, path = filesystem(location)
    return fs.cat_file(path, start=start, end=end)


def read_text(location: str | os.PathLike) -> str:
    return read_bytes(location).decode()


def read_json(location: str | os.PathLike):
    return json.loads(read_bytes(location))


def exists(location: str | os.PathLike) -> bool:
    fs, path = filesystem(location)
    return fs.exists(path)


def isfile(location: str | os.PathLike) -> bool:
    fs, path = filesystem(location)
    return fs.isfile(path)


def isdir(location: str | os.PathLike) -> bool:
    """A local folder, or an object-store prefix (or bucket) holding at least one object."""
    fs, path = filesystem(location)
    return fs.isdir(path)


def size(location: str | os.PathLike) -> int:
    fs, path = filesystem(location)
    return int(fs.size(path))


def makedirs(location: str | os.PathLike) -> None:
    """Create a local folder; object stores have no folders (a prefix exists once an object is under it)."""
    if not is_remote(location):
        os.makedirs(local_path(location), exist_ok=True)


def listdir(location: str | os.PathLike) -> list[str]:
    """Names of the files directly in a folder (or under a prefix), sorted; [] when it does not exist."""
    fs, path = filesystem(location)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    return sorted(basename(e["name"]) for e in entries if e["type"] == "file")


def walk(location: str | os.PathLike) -> list[str]:
    """Relative paths (with `/`) of every file below a folder or prefix, at any depth, sorted; [] when none."""
    fs, path = filesystem(location)
    base = path.rstrip("/")
    try:
        found = fs.find(base)
    except FileNotFoundError:
        return []
    return sorted(name[len(base) + 1:] for name in found if name.startswith(base + "/"))


def remove(location: str | os.PathLike, missing_ok: bool = True) -> None:
    fs, path = filesystem(location)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        if not missing_ok:
            raise


def spool_dir() -> str:
    """Where local temporary copies go ($VTL_SPOOL_DIR, else the system temp folder)."""
    return os.environ.get(SPOOL_ENV) or tempfile.gettempdir()


class AtomicFile:
    """A file written at `local` and committed to `location` in one step, or discarded.

    Local target: `local` is `.{name}.tmp` beside it, committed with fsync + os.replace. Object store: `local` is a
    spool file, committed with one upload of the finished object (see the module docstring for why).
    """

    def __init__(self, location: str | os.PathLike):
        self.location = str(location)
        if is_remote(self.location):
            fd, self.local = tempfile.mkstemp(prefix=f"vtl-{basename(self.location)}.", suffix=".tmp",
                                              dir=spool_dir())
            os.close(fd)
        else:
            target = local_path(self.location)
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            self.local = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.tmp")

    def commit(self) -> str:
        if is_remote(self.location):
            fs, path = filesystem(self.location)
            try:
                fs.put_file(self.local, path)
            finally:
                os.unlink(self.local)
        else:
            with builtins.open(self.local, "rb+") as f:
                os.fsync(f.fileno())
            target = local_path(self.location)
            os.replace(self.local, target)
            fsync_dir(os.path.dirname(target) or ".")
        return self.location

    def discard(self) -> None:
        if os.path.exists(self.local):
            os.unlink(self.local)


def write_bytes_atomic(location: str | os.PathLike, data: bytes) -> str:
    """Write a whole small file so that readers see the old one or the new one, never half."""
    if is_remote(location):
        fs, path = filesystem(location)
        fs.pipe_file(path, data)  # one PUT: the object appears complete or not at all
        return str(location)
    pending = AtomicFile(location)
    try:
        with builtins.open(pending.local, "wb") as f:
            f.write(data)
        return pending.commit()
    except BaseException:
        pending.discard()  # a full disk or a kill leaves no temporary file behind
        raise


def write_json_atomic(location: str | os.PathLike, obj) -> str | Path:
    """Write `obj` as indented JSON atomically (temporary name then rename, or one PUT). Returns the location."""
    data = (json_text(obj, indent=2) + "\n").encode()
    out = write_bytes_atomic(location, data)
    return out if is_remote(out) else Path(out)


def upload(local: str | os.PathLike, location: str | os.PathLike) -> None:
    """Copy a finished local file to a location, atomically."""
    pending = AtomicFile(location)
    shutil.copyfile(local, pending.local)
    pending.commit()


def fetch(location: str | os.PathLike, folder: str) -> str:
    """A local copy of a remote file inside `folder` (the caller removes it); local locations are returned as is."""
    if not is_remote(location):
        return local_path(location)
    fs, path = filesystem(location)
    dest = os.path.join(folder, uuid.uuid4().hex[:8], basename(location))  # the file keeps its name
    os.makedirs(os.path.dirname(dest))
    fs.get_file(path, dest)
    return dest


def finite(obj):
    """`obj` with every non-finite float (NaN, ±Infinity) replaced by None, in dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_text(obj, indent: int | None = None) -> str:
    """Standard JSON (no NaN/Infinity literals) of `obj`; non-JSON values are written as their str()."""
    return json.dumps(finite(obj), indent=indent, ensure_ascii=False, default=str, allow_nan=False)


def fsync_file(f) -> None:
    """Flush an open file and fsync it, so a rename that follows never publishes a file whose bytes are not on disk."""
    f.flush()
    os.fsync(f.fileno())


def fsync_dir(path: str | Path) -> None:
    """fsync a folder so that a rename inside it survives a power loss (not possible on every platform)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
