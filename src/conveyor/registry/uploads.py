"""Blob upload sessions: a directory per session holding its metadata and the bytes so far.

Sessions live on disk only, so they survive a restart: the offset is the data file's size
and the running hash is kept in memory as an optimisation, recomputed from the file after a
restart (or in another server process). Each chunk is all-or-nothing: if the client goes
away or the disk fills up mid-chunk, the file is cut back to where the chunk started.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from conveyor.registry.errors import RegistryError, upload_unknown
from conveyor.registry.names import Digest

_ID_LEN = 32


@dataclass(frozen=True)
class UploadInfo:
    id: str
    repo: str
    user: str
    created_at: float


class _HashCache:
    """The running sha256 of each open session, keyed by upload id and valid for one offset."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[int, hashlib._Hash]] = {}

    def take(self, upload_id: str, offset: int) -> hashlib._Hash | None:
        with self._lock:
            entry = self._entries.pop(upload_id, None)
        if entry is not None and entry[0] == offset:
            return entry[1]
        return None

    def put(self, upload_id: str, offset: int, hasher: hashlib._Hash) -> None:
        with self._lock:
            self._entries[upload_id] = (offset, hasher)

    def drop(self, upload_id: str) -> None:
        with self._lock:
            self._entries.pop(upload_id, None)


def _rehash(f: object, length: int, algorithm: str = "sha256") -> hashlib._Hash:
    h = hashlib.new(algorithm)
    fd = f.fileno()  # type: ignore[attr-defined]
    pos = 0
    while pos < length:
        chunk = os.pread(fd, min(4 << 20, length - pos), pos)
        if not chunk:
            break
        h.update(chunk)
        pos += len(chunk)
    return h


class Uploads:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.hashes = _HashCache()

    def _dir(self, upload_id: str) -> Path:
        if len(upload_id) != _ID_LEN or not all(c in "0123456789abcdef" for c in upload_id):
            raise upload_unknown(upload_id[:64])
        return self.root / upload_id

    def data_path(self, upload_id: str) -> Path:
        return self._dir(upload_id) / "data"

    def create(self, repo: str, user: str) -> UploadInfo:
        info = UploadInfo(id=uuid.uuid4().hex, repo=repo, user=user, created_at=time.time())
        d = self.root / info.id
        d.mkdir(parents=True)
        (d / "data").touch()
        meta = d / "meta.json"
        meta.write_text(json.dumps({"repo": repo, "user": user, "created_at": info.created_at}))
        return info

    def get(self, upload_id: str, repo: str) -> UploadInfo:
        d = self._dir(upload_id)
        try:
            meta = json.loads((d / "meta.json").read_text())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            raise upload_unknown(upload_id) from None
        if meta.get("repo") != repo:
            raise upload_unknown(upload_id)
        return UploadInfo(id=upload_id, repo=repo, user=str(meta.get("user", "")),
                          created_at=float(meta.get("created_at", 0)))

    def size(self, upload_id: str) -> int:
        try:
            return self.data_path(upload_id).stat().st_size
        except FileNotFoundError:
            raise upload_unknown(upload_id) from None

    def discard(self, upload_id: str) -> None:
        self.hashes.drop(upload_id)
        shutil.rmtree(self._dir(upload_id), ignore_errors=True)

    def list(self) -> list[UploadInfo]:
        out: list[UploadInfo] = []
        if not self.root.is_dir():
            return out
        for d in self.root.iterdir():
            try:
                meta = json.loads((d / "meta.json").read_text())
                out.append(UploadInfo(id=d.name, repo=str(meta["repo"]), user=str(meta.get("user", "")),
                                      created_at=float(meta["created_at"])))
            except (OSError, ValueError, KeyError):
                # A directory without readable metadata is a session that died while being
                # created: report it as ancient so that cleanup removes it.
                out.append(UploadInfo(id=d.name, repo="", user="", created_at=0.0))
        return out

    def open_chunk(self, upload_id: str) -> ChunkWriter:
        return ChunkWriter(self, upload_id)


class ChunkWriter:
    """Appends one chunk to a session under an exclusive lock (blocking: run it in a thread)."""

    def __init__(self, uploads: Uploads, upload_id: str) -> None:
        self.uploads = uploads
        self.upload_id = upload_id
        try:
            self.f = open(uploads.data_path(upload_id), "r+b", buffering=0)  # noqa: SIM115
        except FileNotFoundError:
            raise upload_unknown(upload_id) from None
        try:
            # Another request on the same session (any server process) waits here.
            fcntl.flock(self.f.fileno(), fcntl.LOCK_EX)
            if not uploads.data_path(upload_id).exists():  # finished or cancelled while we waited
                raise upload_unknown(upload_id)
            self.start = os.fstat(self.f.fileno()).st_size
            self.f.seek(self.start)
            self.hasher = uploads.hashes.take(upload_id, self.start) or _rehash(self.f, self.start)
            self.saved = self.hasher.copy()
        except BaseException:
            self.f.close()
            raise
        self.written = 0
        self.closed = False
        self.verified = False

    @property
    def offset(self) -> int:
        return self.start + self.written

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.f.write(view)
            if not n:
                raise OSError("short write")
            view = view[n:]
        self.hasher.update(data)
        self.written += len(data)

    def commit(self) -> int:
        self.uploads.hashes.put(self.upload_id, self.offset, self.hasher)
        self.close()
        return self.offset

    def abort(self) -> None:
        """Forget this chunk: cut the file back to where it started."""
        if self.closed:
            return
        if self.verified:
            # The bytes may already have been renamed into the blob store: never touch them.
            self.close()
            return
        try:
            self.f.truncate(self.start)
        finally:
            self.uploads.hashes.put(self.upload_id, self.start, self.saved)
            self.close()

    def finish(self, expected: Digest) -> int:
        """Verify the whole upload against ``expected`` and make it durable; returns its size.

        The lock stays held (call ``close`` after publishing) so no chunk can sneak in between
        verification and publication. On a mismatch the session is discarded (nothing is
        stored) and DIGEST_INVALID raised.
        """
        size = self.offset
        if expected.algorithm == "sha256":
            actual = self.hasher.hexdigest()
        else:
            actual = _rehash(self.f, size, expected.algorithm).hexdigest()
        if actual != expected.hex:
            self.close()
            self.uploads.discard(self.upload_id)
            raise RegistryError(
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
                detail={"expected": str(expected), "actual": f"{expected.algorithm}:{actual}"},
            )
        os.fsync(self.f.fileno())
        self.verified = True
        return size

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.f.close()
