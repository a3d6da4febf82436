"""Preflight of a storage location: one clear line about what is wrong before any work starts.

Part of the storage layer (infra/storage.py). The usual causes, each its own message: a missing input,
a read-only output folder, no credentials, an unreachable endpoint, a missing bucket, a denied write.
"""
from __future__ import annotations

import builtins
import os
import uuid

from infra.storage import StorageError, _open_fs, is_remote, resolve, scheme


def preflight(location: str | os.PathLike, *, write: bool = False, what: str = "location") -> str:
    """Check a location before any work starts; returns it resolved, or raises StorageError with one clear line.

    Local: an input must exist; an output folder must be creatable and writable. Object store: credentials are
    present, the endpoint answers, the bucket exists and (for an output) a probe object can be written and removed.
    """
    loc = resolve(location)
    if not is_remote(loc):
        if write:
            _probe_local(loc, what)
        elif not os.path.exists(loc):
            raise StorageError(f"{what} {loc} not found")
        return loc
    fs, path = _preflight_fs(loc)
    bucket = path.split("/", 1)[0]
    with _store_errors(loc, what, bucket):
        fs.ls(bucket)  # credentials, endpoint and bucket in one request
        if write:
            probe = f"{path.rstrip('/')}/.vtl-write-test-{uuid.uuid4().hex[:8]}"
            fs.pipe_file(probe, b"ok")
            fs.rm_file(probe)
        elif path.strip("/") != bucket and not fs.exists(path):
            raise StorageError(f"{what} {loc} not found")
    return loc


def _probe_local(folder: str, what: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".vtl-write-test-{uuid.uuid4().hex[:8]}")
        with builtins.open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as e:
        raise StorageError(f"{what} {folder} is not writable: {e.strerror or e}") from e


def _preflight_fs(location: str):
    """A separate client that fails fast: one attempt, short timeouts (the normal one retries for ~10 s)."""
    name = scheme(location)
    kwargs = {"config_kwargs": {"connect_timeout": 3, "read_timeout": 10,
                                              "retries": {"max_attempts": 1}}} if name == "s3" else {}
    return _open_fs(name, **kwargs), location.split("://", 1)[1]


class _store_errors:
    """Turn a store's exceptions into one StorageError line saying which of the usual causes it is."""

    def __init__(self, location: str, what: str, bucket: str):
        self.location, self.what, self.bucket = location, what, bucket

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, StorageError):
            return False
        raise StorageError(f"{self.what} {self.location}: {self.explain(exc)}") from exc

    def explain(self, exc: BaseException) -> str:
        kind = type(exc).__name__
        text = str(exc).splitlines()[0] if str(exc) else kind
        if kind in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"):
            return (f"no credentials found ({text}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE "
                    f"(GOOGLE_APPLICATION_CREDENTIALS for gs://)")
        if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionError") \
                or isinstance(exc, (ConnectionError, TimeoutError)):
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the store's default endpoint"
            return f"cannot reach the storage endpoint ({endpoint}): {text}"
        if isinstance(exc, FileNotFoundError):
            return f"bucket {self.bucket!r} does not exist (or is not visible with these credentials)"
        if isinstance(exc, PermissionError):
            return f"permission denied ({text}); check the credentials' policy for bucket {self.bucket!r}"
        return f"{kind}: {text}"
