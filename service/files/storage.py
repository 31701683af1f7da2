"""Dataset storage on a local folder (a volume in production; object storage later).

Uploads are written to a staging file while they stream in — hashed and size-checked on
the way — and only moved to their final key once complete, so an aborted or oversized
upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from service.config import Settings, get_settings
from service.errors import PayloadTooLarge


class StagedUpload:
    def __init__(self, root: Path, max_bytes: int) -> None:
        staging = root / ".staging"
        staging.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=staging, prefix="upload-")
        self._handle = os.fdopen(fd, "wb")
        self.path = Path(name)
        self.max_bytes = max_bytes
        self.size = 0
        self._sha = hashlib.sha256()
        self._first_bytes = b""

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise PayloadTooLarge(
                f"File exceeds the upload limit of {self.max_bytes} bytes.", param="file"
            )
        if len(self._first_bytes) < 4096:
            self._first_bytes += chunk[: 4096 - len(self._first_bytes)]
        self._sha.update(chunk)
        self._handle.write(chunk)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def head(self) -> bytes:
        return self._first_bytes

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class LocalStorage:
    def __init__(self, root: Path, max_upload_bytes: int) -> None:
        self.root = root
        self.max_upload_bytes = max_upload_bytes

    def stage(self) -> StagedUpload:
        return StagedUpload(self.root, self.max_upload_bytes)

    def path_for(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"storage key escapes the storage root: {key}")
        return path

    def commit(self, staged: StagedUpload, key: str) -> Path:
        staged.close()
        final = self.path_for(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, final)
        return final

    def delete(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)


def get_storage(settings: Settings | None = None) -> LocalStorage:
    settings = settings or get_settings()
    return LocalStorage(settings.storage_dir, settings.max_upload_bytes)
