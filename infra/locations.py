"""Location strings, before any file is touched: which store a location names (`scheme`), its absolute form
(`resolve`), joining and splitting it, and the one error the storage layer raises (`StorageError`). A location stays
a string (a URL is never made a `Path`: `Path("s3://b/x")` is `s3:/b/x`). infra.storage does the I/O and re-exports
these names, which is where callers take them from."""
from __future__ import annotations

import os
import re

SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


OBJECT_SCHEMES = ("s3", "gs")


class StorageError(ValueError):
    """An unusable location or store (unknown scheme, missing bucket, no credentials, unreachable, read-only).

    The message is one line meant for the user; the CLIs print it and exit 2.
    """


def scheme(location: str | os.PathLike) -> str:
    """"s3", "gs", or "" for local (a plain path or file://). Any other URL scheme is a StorageError."""
    m = SCHEME_RE.match(str(location))
    if m is None or m.group(1).lower() == "file":
        return ""
    name = m.group(1).lower()
    if name not in OBJECT_SCHEMES:
        raise StorageError(f"{location}: storage scheme {name}:// is not supported (use a local path, file://, "
                           f"s3:// or gs://)")
    return name


def is_remote(location: str | os.PathLike) -> bool:
    return scheme(location) != ""


def resolve(location: str | os.PathLike) -> str:
    """The absolute form of a location: URLs unchanged (trailing / dropped), local paths absolute, file:// stripped."""
    text = str(location)
    if is_remote(text):
        check_object_path(text)
        return text.rstrip("/")
    if SCHEME_RE.match(text):
        text = text[len("file://"):]
    return os.path.abspath(os.path.expanduser(text))


def join(location: str | os.PathLike, *parts: str) -> str:
    text = str(location)
    if is_remote(text):
        return "/".join([text.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(local_path(text), *parts)


def basename(location: str | os.PathLike) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def parent(location: str | os.PathLike) -> str:
    text = str(location).rstrip("/")
    return text.rsplit("/", 1)[0] if is_remote(text) else os.path.dirname(local_path(text))


def local_path(location: str | os.PathLike) -> str:
    """A local location as a plain path (file:// stripped); not for URLs."""
    text = str(location)
    return text[len("file://"):] if text.startswith("file://") else text


def check_object_path(location: str | os.PathLike) -> None:
    """Refuse `.` and `..` segments in an object-store URL: a store takes them as literal key parts, so
    `s3://b/../../x` would write keys starting `../../` instead of the folder meant."""
    parts = str(location).split("://", 1)[-1].split("/")
    if any(p in (".", "..") for p in parts):
        raise StorageError(f"{location}: '.' and '..' are not folders in an object store; give the prefix without them")
