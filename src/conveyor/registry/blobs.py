"""Blob bookkeeping: which blobs exist, which repositories may serve them, publication.

Publication order matters for garbage collection running concurrently: the blob row is
upserted (touching ``last_used_at``) and the file renamed into place inside one transaction,
and the collector deletes the row and unlinks the file inside one transaction, so the two
can never interleave into "row present, file missing".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from conveyor.core import utcnow
from conveyor.registry.models import RegistryBlob, RegistryRepository, RepositoryBlob
from conveyor.registry.repos import ensure_repo, find_repo, in_transaction, insert_for, lock_digest
from conveyor.registry.service import Registry


def touch_blob(session: Session, digest: str, size: int) -> None:
    now = utcnow()
    stmt = insert_for(session, RegistryBlob.__table__).values(
        digest=digest, size=size, created_at=now, last_used_at=now
    )
    session.execute(stmt.on_conflict_do_update(index_elements=["digest"], set_={"last_used_at": now}))


def link_blob(session: Session, repo_id: int, digest: str) -> None:
    stmt = insert_for(session, RepositoryBlob.__table__).values(repo_id=repo_id, digest=digest, created_at=utcnow())
    session.execute(stmt.on_conflict_do_nothing(index_elements=["repo_id", "digest"]))


def commit_blob(
    reg: Registry, repo: str, user: str, digest: str, size: int, publish: Callable[[], None] | None
) -> None:
    """Record a verified blob and link it to ``repo``; ``publish`` renames its bytes into place."""

    def tx(s: Session) -> None:
        repo_id = ensure_repo(s, repo, user)
        lock_digest(s, digest)
        touch_blob(s, digest, size)
        if publish is not None:
            publish()
        link_blob(s, repo_id, digest)

    in_transaction(reg.db, tx)


def publish_file(reg: Registry, src: Path, digest: str) -> Callable[[], None]:
    return lambda: reg.store.publish(src, digest)


def blob_size(session: Session, repo: str, digest: str) -> int | None:
    """The size of ``digest`` if ``repo`` may serve it."""
    row = session.execute(
        select(RegistryBlob.size)
        .join(RepositoryBlob, RepositoryBlob.digest == RegistryBlob.digest)
        .join(RegistryRepository, RegistryRepository.id == RepositoryBlob.repo_id)
        .where(RegistryRepository.name == repo, RegistryBlob.digest == digest)
    ).first()
    return int(row[0]) if row else None


def mount(reg: Registry, repo: str, user: str, digest: str, source: str | None) -> bool:
    """Link an existing blob into ``repo`` from ``source`` (any repository when None)."""

    def tx(s: Session) -> bool:
        q = select(RegistryBlob.size).join(RepositoryBlob, RepositoryBlob.digest == RegistryBlob.digest)
        if source is not None:
            q = q.join(RegistryRepository, RegistryRepository.id == RepositoryBlob.repo_id).where(
                RegistryRepository.name == source
            )
        q = q.where(RegistryBlob.digest == digest).limit(1)
        if s.execute(q).first() is None or not reg.store.has(digest):
            return False
        repo_id = ensure_repo(s, repo, user)
        s.execute(update(RegistryBlob).where(RegistryBlob.digest == digest).values(last_used_at=utcnow()))
        link_blob(s, repo_id, digest)
        return True

    return in_transaction(reg.db, tx)


def unlink(session: Session, repo: str, digest: str) -> bool:
    r = find_repo(session, repo)
    if r is None:
        return False
    res = session.execute(
        delete(RepositoryBlob).where(RepositoryBlob.repo_id == r.id, RepositoryBlob.digest == digest)
    )
    return bool(res.rowcount)  # type: ignore[attr-defined]


def store_bytes(reg: Registry, repo: str, user: str, data: bytes) -> str:
    """Store a small blob written by the server itself (signatures, their configs) in ``repo``."""
    import hashlib
    import os
    import uuid

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if reg.store.has(digest) and mount(reg, repo, user, digest, None):
        return digest
    reg.store.ensure()
    tmp = reg.store.tmp_dir / f"{uuid.uuid4().hex}.part"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        commit_blob(reg, repo, user, digest, len(data), publish_file(reg, tmp, digest))
    finally:
        tmp.unlink(missing_ok=True)
    return digest


def read_bytes(reg: Registry, session: Session, repo: str, digest: str, limit: int) -> bytes | None:
    """A blob ``repo`` may serve, if it is at most ``limit`` bytes."""
    size = blob_size(session, repo, digest)
    if size is None or size > limit:
        return None
    try:
        return reg.store.path(digest).read_bytes()
    except FileNotFoundError:
        return None
