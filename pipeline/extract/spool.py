"""Media problems as data (`MediaError(reason, detail)`, which the steps turn into error records) and the local spool
of object-store media for decoders that need a file (`MediaSpool`). pipeline.extract.decode re-exports both."""
from __future__ import annotations

import os


class MediaError(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class MediaSpool:
    """Local copies of object-store media, for decoders that need a file (decord, PyAV's seeks, PIL).

    One folder per task under the spool root (infra.storage.spool_dir); `release` removes the copies
    made so far (the caller does it once their frames are decoded: at most one batch of media is on disk), `close`
    removes the folder. Local media is used in place.
    """

    def __init__(self):
        self.folder: str | None = None
        self.files: list[str] = []

    def local(self, media: str) -> str:
        from infra import storage
        from manifests.common import REMOTE_MEDIA, is_remote_media

        try:
            remote = storage.is_remote(media)
        except storage.StorageError as e:  # http(s) media (fetched by `vtl-pipeline download`), or an unknown scheme
            reason = REMOTE_MEDIA if is_remote_media(media) else "unsupported_media"
            raise MediaError(reason, f"{e}; fetch it first with `vtl-pipeline download`") from e
        if not remote:
            return media
        if self.folder is None:
            import tempfile

            self.folder = tempfile.mkdtemp(prefix="vtl-spool-", dir=storage.spool_dir())
        try:
            path = storage.fetch(media, self.folder)
        except FileNotFoundError as e:
            raise MediaError("missing_file", f"{media} does not exist") from e
        except (OSError, ValueError) as e:  # permission denied, a broken connection: this file, not the run
            raise MediaError("unreadable", f"{media}: {type(e).__name__}: {e}") from e
        self.files.append(path)
        return path

    def release(self) -> None:
        for path in self.files:
            if os.path.exists(path):
                os.unlink(path)
                os.rmdir(os.path.dirname(path))  # storage.fetch puts each copy in its own folder
        self.files = []

    def close(self) -> None:
        self.release()
        if self.folder is not None:
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
