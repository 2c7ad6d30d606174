"""Garbage collection: remove manifests nothing needs and blobs no manifest references.

Safe while the registry serves. Nothing used since ``started - grace`` is collected: every
upload, push, tag and mount touches ``last_used_at`` of what it uses, inside the transaction
that checks the thing exists, and every deletion here re-checks its conditions inside its own
transaction (row lock on PostgreSQL, the single writer lock on SQLite). So a push that races
with the collector either finds its blob gone and is refused cleanly (MANIFEST_BLOB_UNKNOWN),
or keeps it.

A manifest is live when it is tagged, one of the last ``lineage.KEEP_PREVIOUS`` digests a tag had,
used within the grace period, referenced by a live
index, or refers (``subject``) to a live manifest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from conveyor.core import record, utcnow
from conveyor.registry.lifecycle import purge_abandoned_uploads, upload_ttl
from conveyor.registry.lineage import kept_previous
from conveyor.registry.models import (
    Manifest,
    ManifestReference,
    RegistryBlob,
    RegistryRepository,
    Tag,
)
from conveyor.registry.repos import lock_digest, write_session
from conveyor.registry.service import Registry

log = logging.getLogger(__name__)

DEFAULT_GRACE = 3600.0


@dataclass
class GcReport:
    dry_run: bool
    grace_seconds: float
    manifests: list[dict[str, Any]] = field(default_factory=list)
    blobs: list[dict[str, Any]] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return sum(int(m["size"]) for m in self.manifests) + sum(int(b["size"]) for b in self.blobs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "grace_seconds": self.grace_seconds,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "orphan_files": self.orphan_files,
            "uploads": self.uploads,
            "bytes_freed": self.bytes_freed,
        }


@dataclass
class _M:
    id: int
    repo_id: int
    repo: str
    digest: str
    size: int
    subject: str | None
    recent: bool
    children: list[str]
    tagged: bool


def _load_manifests(session: Session, cutoff: datetime) -> list[_M]:
    tagged = set(session.execute(select(Tag.manifest_id)).scalars())
    kept = kept_previous(session)  # a tag's previous digests (a refreshed cache keeps the old one)
    children: dict[int, list[str]] = {}
    for mid, dig in session.execute(
        select(ManifestReference.manifest_id, ManifestReference.digest).where(ManifestReference.kind == "manifest")
    ):
        children.setdefault(mid, []).append(dig)
    rows = session.execute(
        select(Manifest.id, Manifest.repo_id, RegistryRepository.name, Manifest.digest, Manifest.size,
               Manifest.subject_digest, Manifest.last_used_at)
        .join(RegistryRepository, RegistryRepository.id == Manifest.repo_id)
    ).all()
    return [
        _M(id=r[0], repo_id=r[1], repo=r[2], digest=r[3], size=r[4], subject=r[5], recent=r[6] >= cutoff,
           children=children.get(r[0], []), tagged=r[0] in tagged or (r[2], r[3]) in kept)
        for r in rows
    ]


def _live(ms: list[_M]) -> set[int]:
    by_key = {(m.repo_id, m.digest): m for m in ms}
    referrers: dict[tuple[int, str], list[_M]] = {}
    for m in ms:
        if m.subject:
            referrers.setdefault((m.repo_id, m.subject), []).append(m)
    live: set[int] = set()
    stack = [m for m in ms if m.tagged or m.recent]
    while stack:
        m = stack.pop()
        if m.id in live:
            continue
        live.add(m.id)
        for d in m.children:
            child = by_key.get((m.repo_id, d))
            if child is not None and child.id not in live:
                stack.append(child)
        stack.extend(r for r in referrers.get((m.repo_id, m.digest), []) if r.id not in live)
    return live


def _try_delete_manifest(session: Session, mid: int, cutoff: datetime, actor: str) -> str:
    m = session.execute(select(Manifest).where(Manifest.id == mid).with_for_update()).scalar_one_or_none()
    if m is None:
        return "gone"
    if m.last_used_at >= cutoff or session.execute(select(exists().where(Tag.manifest_id == mid))).scalar():
        return "kept"
    parent = session.execute(
        select(exists().where(
            ManifestReference.kind == "manifest", ManifestReference.digest == m.digest,
            ManifestReference.manifest_id == Manifest.id, Manifest.repo_id == m.repo_id))
    ).scalar()
    if parent:
        return "blocked"
    if m.subject_digest:
        subject = session.execute(
            select(Manifest.id, Manifest.last_used_at).where(
                Manifest.repo_id == m.repo_id, Manifest.digest == m.subject_digest)
        ).first()
        if subject is not None and (
            subject[1] >= cutoff or session.execute(select(exists().where(Tag.manifest_id == subject[0]))).scalar()
        ):
            return "kept"
    repo = session.get(RegistryRepository, m.repo_id)
    session.delete(m)
    record(session, actor=actor, action="registry.delete", target=f"{repo.name if repo else '?'}@{m.digest}",
           payload={"repository": repo.name if repo else None, "tag": None, "digest": m.digest, "pusher": actor,
                    "reason": "garbage-collected"})
    return "deleted"


def _try_delete_blob(reg: Registry, session: Session, digest: str, cutoff: datetime) -> int | None:
    lock_digest(session, digest)
    referenced = exists().where(ManifestReference.digest == digest, ManifestReference.kind == "blob")
    row = session.execute(
        select(RegistryBlob.size).where(RegistryBlob.digest == digest, RegistryBlob.last_used_at < cutoff, ~referenced)
    ).first()
    if row is None:
        return None
    session.execute(delete(RegistryBlob).where(RegistryBlob.digest == digest))
    # Unlinked inside the transaction: a concurrent publication of the same digest waits for
    # this transaction and then writes a fresh row and file.
    reg.store.remove(digest)
    return int(row[0])


def collect(reg: Registry, *, dry_run: bool = False, grace: float = DEFAULT_GRACE, actor: str = "gc") -> GcReport:
    started = utcnow()
    cutoff = started - timedelta(seconds=max(grace, 0.0))
    report = GcReport(dry_run=dry_run, grace_seconds=grace)
    with reg.reads() as s:
        ms = _load_manifests(s, cutoff)
    live = _live(ms)
    dead = [m for m in ms if m.id not in live]

    if dry_run:
        report.manifests = [{"repository": m.repo, "digest": m.digest, "size": m.size} for m in dead]
    else:
        pending = {m.id: m for m in dead}
        while pending:
            progress = False
            for mid in list(pending):
                with write_session(reg.db) as s:
                    outcome = _try_delete_manifest(s, mid, cutoff, actor)
                if outcome == "blocked":
                    continue
                m = pending.pop(mid)
                progress = True
                if outcome == "deleted":
                    report.manifests.append({"repository": m.repo, "digest": m.digest, "size": m.size})
            if not progress:
                break

    with reg.reads() as s:
        live_ids = live if dry_run else set(s.execute(select(Manifest.id)).scalars())
        referenced = set(
            s.execute(select(ManifestReference.digest).where(
                ManifestReference.kind == "blob", ManifestReference.manifest_id.in_(live_ids))).scalars()
        ) if live_ids else set()
        candidates = s.execute(
            select(RegistryBlob.digest, RegistryBlob.size).where(RegistryBlob.last_used_at < cutoff)
            .order_by(RegistryBlob.last_used_at, RegistryBlob.digest)
        ).all()
        known = set(s.execute(select(RegistryBlob.digest)).scalars())
    for digest, size in candidates:
        if digest in referenced:
            continue
        if dry_run:
            report.blobs.append({"digest": digest, "size": int(size)})
            continue
        with write_session(reg.db) as s:
            freed = _try_delete_blob(reg, s, digest, cutoff)
        if freed is not None:
            report.blobs.append({"digest": digest, "size": freed})

    # Files without a row: left by a crash between the rename and the commit.
    cutoff_ts = cutoff.timestamp()
    for digest in reg.store.all_digests():
        if digest in known:
            continue
        path = reg.store.path(digest)
        try:
            if path.stat().st_mtime >= cutoff_ts:
                continue
        except FileNotFoundError:
            continue
        if dry_run:
            report.orphan_files.append(digest)
            continue
        with write_session(reg.db) as s:
            lock_digest(s, digest)
            if s.get(RegistryBlob, digest) is None:
                reg.store.remove(digest)
                report.orphan_files.append(digest)

    # Upload sessions are only abandoned by age (their own TTL): the grace period for content
    # says nothing about a client still streaming a large layer.
    report.uploads = purge_abandoned_uploads(reg, upload_ttl(), dry_run=dry_run)
    if not dry_run:
        with write_session(reg.db) as s:
            record(s, actor=actor, action="registry.gc", target="registry", payload={
                "manifests": len(report.manifests), "blobs": len(report.blobs), "bytes_freed": report.bytes_freed})
    log.info("registry gc%s: %d manifest(s), %d blob(s), %d bytes", " (dry run)" if dry_run else "",
             len(report.manifests), len(report.blobs), report.bytes_freed)
    return report
