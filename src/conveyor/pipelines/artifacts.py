"""Artifacts: content-addressed files, immutable once published, kept per retention policy.

A file is stored once under ``artifacts/sha256/<2>/<digest>``, written to a temporary name,
verified and renamed into place, so a published digest always names complete content.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.core import Conflict, InvalidInput, NotFound, Settings, after_commit, utcnow
from conveyor.pipelines.config import artifacts_dir
from conveyor.pipelines.models import Artifact, Run


def blob_path(settings: Settings, digest: str) -> Path:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise NotFound(f"'{digest}' is not an artifact digest", rule="artifact.digest")
    return artifacts_dir(settings) / "sha256" / hexpart[:2] / hexpart


@dataclass(frozen=True)
class Staged:
    digest: str
    size: int


class Incoming:
    """An upload being received: hashed as it is written, published by ``close`` under its digest."""

    def __init__(self, settings: Settings, limit: int) -> None:
        self.settings, self.limit = settings, limit
        root = artifacts_dir(settings)
        root.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=root, prefix=".incoming-")
        self.out = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise InvalidInput(f"artifact larger than {self.limit // (1024 * 1024)} MiB", rule="artifact.size")
        self.hash.update(chunk)
        self.out.write(chunk)

    def close(self, expect: str | None = None) -> Staged:
        try:
            self.out.flush()
            os.fsync(self.out.fileno())
            self.out.close()
            digest = "sha256:" + self.hash.hexdigest()
            if expect is not None and expect != digest:
                raise InvalidInput(f"the upload's digest is {digest}, not {expect}", rule="artifact.digest-mismatch")
            dest = blob_path(self.settings, digest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                os.unlink(self.tmp)
            else:
                os.chmod(self.tmp, 0o444)
                os.replace(self.tmp, dest)
            return Staged(digest, self.size)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if not self.out.closed:
            self.out.close()
        Path(self.tmp).unlink(missing_ok=True)


def record_staged(session: Session, settings: Settings, run: Run, name: str, kind: str, media_type: str,
                  staged: Staged, expires_at: datetime) -> Artifact:
    existing = session.execute(select(Artifact).where(Artifact.run_id == run.id, Artifact.name == name)
                               ).scalar_one_or_none()
    if existing is not None:  # the runner retried an upload whose answer it did not get
        if existing.digest != staged.digest:
            raise Conflict(f"run {run.id} already published a different '{name}'", rule="artifact.immutable")
        return existing
    row = Artifact(run_id=run.id, repo_name=run.repo_name, name=name, kind=kind, digest=staged.digest,
                   size=staged.size, media_type=media_type, expires_at=expires_at)
    session.add(row)
    session.flush()
    return row


def store_file(settings: Settings, source: Path) -> tuple[str, int]:
    """Copy ``source`` into the store; returns (digest, size)."""
    h = hashlib.sha256()
    root = artifacts_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".incoming-")
    try:
        size = 0
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        digest = "sha256:" + h.hexdigest()
        dest = blob_path(settings, digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            os.unlink(tmp)
        else:
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        return digest, size
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish(session: Session, settings: Settings, run: Run, name: str, kind: str, source: Path,
            media_type: str, retention_days: int) -> Artifact:
    digest, size = store_file(settings, source)
    row = Artifact(run_id=run.id, repo_name=run.repo_name, name=name, kind=kind, digest=digest, size=size,
                   media_type=media_type, expires_at=utcnow() + timedelta(days=retention_days))
    session.add(row)
    session.flush()
    return row


def get_by_digest(session: Session, digest: str) -> Artifact:
    row = session.execute(select(Artifact).where(Artifact.digest == digest).limit(1)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no artifact with digest {digest}", rule="artifact.exists")
    return row


def prune(session: Session, settings: Settings) -> int:
    """Forget expired artifacts, except each repository's newest successful CI run's; delete
    blobs no remaining artifact references once the transaction commits. Returns how many."""
    newest = (
        select(Run.repo_name, func.max(Run.id).label("run_id"))
        .where(Run.pipeline == "ci", Run.state == "success")
        .group_by(Run.repo_name)
        .subquery()
    )
    keep_runs = set(session.execute(select(newest.c.run_id)).scalars())
    expired = session.execute(select(Artifact).where(Artifact.expires_at < utcnow())).scalars().all()
    candidates = set()
    for a in expired:
        if a.run_id in keep_runs:
            continue
        candidates.add(a.digest)
        session.delete(a)
    session.flush()
    orphans = [
        d for d in candidates
        if session.execute(select(Artifact.id).where(Artifact.digest == d).limit(1)).first() is None
    ]

    def unlink() -> None:
        for d in orphans:
            blob_path(settings, d).unlink(missing_ok=True)

    after_commit(session, unlink)
    return len(orphans)
