"""The content-addressed blob store on disk, shared by every repository.

Layout (like CNCF Distribution's): ``blobs/<algorithm>/<first two hex>/<hex>``. A blob file
only ever appears through ``publish``: its bytes were written elsewhere on the same
filesystem, verified against the digest and fsynced, then renamed into place, so a reader
(or a crash) never sees a partial blob.
"""

from __future__ import annotations

import os
from pathlib import Path

from conveyor.core import Settings

REGISTRY_DIR_ENV = "CONVEYOR_REGISTRY_DIR"


def registry_root(settings: Settings) -> Path:
    """Where blobs and uploads live: the data dir, unless CONVEYOR_REGISTRY_DIR moves them."""
    override = os.environ.get(REGISTRY_DIR_ENV)
    return Path(override).expanduser().resolve() if override else settings.data_dir / "registry"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs"
        self.uploads_dir = root / "uploads"
        self.tmp_dir = root / "tmp"

    def ensure(self) -> None:
        for d in (self.blobs_dir, self.uploads_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        return self.blobs_dir / algo / hexpart[:2] / hexpart

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def publish(self, src: Path, digest: str) -> None:
        """Make verified, fsynced bytes at ``src`` visible as ``digest`` (atomic rename)."""
        dest = self.path(digest)
        if dest.is_file():
            src.unlink(missing_ok=True)
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        fsync_dir(dest.parent)

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def all_digests(self) -> list[str]:
        out: list[str] = []
        if not self.blobs_dir.is_dir():
            return out
        for algo_dir in self.blobs_dir.iterdir():
            if not algo_dir.is_dir():
                continue
            for shard in algo_dir.iterdir():
                if shard.is_dir():
                    out.extend(f"{algo_dir.name}:{f.name}" for f in shard.iterdir() if f.is_file())
        return out
