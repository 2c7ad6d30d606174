"""Start-up and background work of the registry: storage layout, token key, abandoned uploads."""

from __future__ import annotations

import logging
import os
import threading
import time

from conveyor.core import Database, Settings
from conveyor.registry.service import Registry

log = logging.getLogger(__name__)

UPLOAD_TTL_ENV = "CONVEYOR_REGISTRY_UPLOAD_TTL"
DEFAULT_UPLOAD_TTL = 24 * 3600.0


def upload_ttl() -> float:
    try:
        return float(os.environ.get(UPLOAD_TTL_ENV, DEFAULT_UPLOAD_TTL))
    except ValueError:
        return DEFAULT_UPLOAD_TTL


def purge_abandoned_uploads(reg: Registry, older_than: float, dry_run: bool = False) -> list[str]:
    """Remove upload sessions untouched for ``older_than`` seconds; returns their ids."""
    cutoff = time.time() - older_than
    gone = []
    for info in reg.uploads.list():
        data = reg.store.uploads_dir / info.id / "data"
        try:
            touched = max(info.created_at, data.stat().st_mtime)
        except FileNotFoundError:
            touched = info.created_at
        if touched < cutoff:
            if not dry_run:
                reg.uploads.discard(info.id)
            gone.append(info.id)
    return gone


class UploadJanitor:
    """Periodically drops abandoned upload sessions."""

    def __init__(self, reg: Registry, interval: float = 600.0) -> None:
        self.reg = reg
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="registry-janitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                gone = purge_abandoned_uploads(self.reg, upload_ttl())
                if gone:
                    log.info("removed %d abandoned upload session(s)", len(gone))
            except Exception:
                log.exception("registry janitor iteration failed")


def create(db: Database, settings: Settings) -> Registry:
    return Registry(db, settings)
