"""Manifests and tags in the database: push, pull, delete, tag listing, referrers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from conveyor.core import record, utcnow
from conveyor.registry import lineage, mediatypes
from conveyor.registry.errors import RegistryError, manifest_unknown, name_unknown
from conveyor.registry.models import (
    Manifest,
    ManifestReference,
    RegistryBlob,
    RegistryRepository,
    RepositoryBlob,
    Tag,
)
from conveyor.registry.names import check_tag, looks_like_digest, parse_digest, valid_tag
from conveyor.registry.policy import check_tag_change
from conveyor.registry.repos import ensure_repo, find_repo

_M = cast(Table, Manifest.__table__)
_T = cast(Table, Tag.__table__)
_REFS = cast(Table, ManifestReference.__table__)


@dataclass(frozen=True)
class StoredManifest:
    digest: str
    media_type: str
    size: int
    content: bytes | None


@dataclass(frozen=True)
class PushResult:
    digest: str
    subject: str | None
    tags: list[str]


def _repo_or_unknown(session: Session, name: str) -> RegistryRepository:
    repo = find_repo(session, name)
    if repo is None:
        raise name_unknown(name)
    return repo


def lookup(session: Session, repo: str, ref: str, with_content: bool) -> StoredManifest:
    """A manifest by tag or digest; MANIFEST_UNKNOWN / NAME_UNKNOWN when absent."""
    cols: list[Any] = [Manifest.digest, Manifest.media_type, Manifest.size]
    if with_content:
        cols.append(Manifest.content)
    q = select(*cols).join(RegistryRepository, RegistryRepository.id == Manifest.repo_id)
    if looks_like_digest(ref):
        q = q.where(RegistryRepository.name == repo, Manifest.digest == str(parse_digest(ref)))
    else:
        if not valid_tag(ref):
            raise manifest_unknown(ref[:200])
        q = q.join(Tag, Tag.manifest_id == Manifest.id).where(RegistryRepository.name == repo, Tag.name == ref)
    row = session.execute(q).first()
    if row is None:
        _repo_or_unknown(session, repo)
        raise manifest_unknown(ref)
    return StoredManifest(
        digest=str(row[0]), media_type=str(row[1]), size=int(row[2]),
        content=bytes(row[3]) if with_content else None,
    )


def _missing(session: Session, repo_id: int, parsed: mediatypes.ParsedManifest) -> RegistryError | None:
    now = utcnow()
    blobs = sorted({d.digest for d in parsed.blobs if not d.foreign})
    if blobs:
        # Touch first: this takes the rows' locks, so a concurrent garbage collection either
        # removed a blob before this point (and it is reported missing below) or keeps it.
        session.execute(update(RegistryBlob).where(RegistryBlob.digest.in_(blobs)).values(last_used_at=now))
        have = set(
            session.execute(
                select(RepositoryBlob.digest).where(RepositoryBlob.repo_id == repo_id, RepositoryBlob.digest.in_(blobs))
            ).scalars()
        )
        for d in blobs:
            if d not in have:
                return RegistryError("MANIFEST_BLOB_UNKNOWN", "blob unknown to registry", detail={"digest": d})
    children = sorted({d.digest for d in parsed.children})
    if children:
        session.execute(
            update(Manifest).where(Manifest.repo_id == repo_id, Manifest.digest.in_(children)).values(last_used_at=now)
        )
        have = set(
            session.execute(
                select(Manifest.digest).where(Manifest.repo_id == repo_id, Manifest.digest.in_(children))
            ).scalars()
        )
        for d in children:
            if d not in have:
                return RegistryError("MANIFEST_BLOB_UNKNOWN", "manifest unknown to registry", detail={"digest": d})
    return None


def _touch_closure(session: Session, repo_id: int, manifest_id: int, limit: int = 10_000) -> None:
    """Mark a re-pushed (or re-tagged) manifest and everything it references as just used, so a
    garbage collection running now keeps them all."""
    now = utcnow()
    seen = {manifest_id}
    frontier = [manifest_id]
    session.execute(update(_M).where(_M.c.id == manifest_id).values(last_used_at=now))
    while frontier and len(seen) < limit:
        refs = session.execute(
            select(ManifestReference.digest, ManifestReference.kind).where(ManifestReference.manifest_id.in_(frontier))
        ).all()
        blob_digests = sorted({d for d, k in refs if k == "blob"})
        if blob_digests:
            session.execute(
                update(RegistryBlob).where(RegistryBlob.digest.in_(blob_digests)).values(last_used_at=now))
        child_digests = sorted({d for d, k in refs if k == "manifest"})
        frontier = []
        if child_digests:
            for mid in session.execute(
                select(Manifest.id).where(Manifest.repo_id == repo_id, Manifest.digest.in_(child_digests))
            ).scalars():
                if mid not in seen:
                    seen.add(mid)
                    frontier.append(mid)
            session.execute(
                update(Manifest).where(Manifest.repo_id == repo_id, Manifest.digest.in_(child_digests))
                .values(last_used_at=now))


def _event(session: Session, action: str, actor: str, repo: str, tag: str | None, digest: str,
           media_type: str | None = None) -> None:
    target = f"{repo}:{tag}" if tag else f"{repo}@{digest}"
    payload: dict[str, Any] = {"repository": repo, "tag": tag, "digest": digest, "pusher": actor}
    if media_type:
        payload["media_type"] = media_type
    record(session, actor=actor, action=action, target=target, payload=payload)


def _set_tag(session: Session, repo: str, repo_id: int, tag: str, manifest_id: int, actor: str, digest: str) -> bool:
    """Point ``tag`` at the manifest; False when it already did. A move is kept in the tag's history."""
    now = utcnow()
    row = session.execute(
        select(_T.c.id, _T.c.manifest_id).where(_T.c.repo_id == repo_id, _T.c.name == tag)
    ).first()
    if row is None:
        session.execute(insert(_T).values(repo_id=repo_id, name=tag, manifest_id=manifest_id, updated_by=actor,
                                          updated_at=now, checked_at=now, locked=False))
        return True
    if row[1] == manifest_id:
        session.execute(update(_T).where(_T.c.id == row[0]).values(checked_at=now))
        return False
    existing = session.get(Tag, row[0])
    assert existing is not None
    check_tag_change(session, repo, existing, "overwritten")
    old_digest = existing.manifest.digest
    existing.manifest_id = manifest_id
    existing.updated_by = actor
    existing.updated_at = now
    existing.checked_at = now
    session.flush()
    lineage.tag_moved(session, repo, tag, old_digest, digest, actor)
    return True


def put(
    session: Session,
    repo: str,
    ref: str,
    body: bytes,
    content_type: str | None,
    actor: str,
    extra_tags: list[str] | None = None,
    verify_references: bool = True,
) -> PushResult:
    parsed = mediatypes.parse(body, content_type)
    tags = [t for t in (extra_tags or [])]
    if looks_like_digest(ref):
        want = parse_digest(ref)
        actual = hashlib.new(want.algorithm, body).hexdigest()
        if actual != want.hex:
            raise RegistryError(
                "DIGEST_INVALID", "manifest digest did not match its content",
                detail={"expected": str(want), "actual": f"{want.algorithm}:{actual}"},
            )
        digest = str(want)
    else:
        tags.insert(0, ref)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
    for t in tags:
        check_tag(t)
    repo_id = ensure_repo(session, repo, actor)
    if verify_references:
        missing = _missing(session, repo_id, parsed)
        if missing is not None:
            raise missing
    # Plain SQL statements rather than ORM objects: this is the push path's hot spot.
    manifest_id = session.execute(
        select(_M.c.id).where(_M.c.repo_id == repo_id, _M.c.digest == digest)
    ).scalar()
    created = manifest_id is None
    if manifest_id is None:
        now = utcnow()
        manifest_id = session.execute(
            insert(_M).values(
                repo_id=repo_id, digest=digest, media_type=parsed.media_type, size=len(body), content=body,
                artifact_type=parsed.artifact_type,
                subject_digest=parsed.subject.digest if parsed.subject else None,
                annotations=parsed.annotations, pushed_by=actor, created_at=now, last_used_at=now,
            ).returning(_M.c.id)
        ).scalar_one()
        lineage.record_image(session, repo, digest, parsed.annotations)
        refs = {(d.digest, "blob") for d in parsed.blobs} | {(d.digest, "manifest") for d in parsed.children}
        if refs:
            session.execute(insert(_REFS), [{"manifest_id": manifest_id, "digest": d, "kind": k}
                                            for d, k in sorted(refs)])
    else:
        _touch_closure(session, repo_id, manifest_id)
    moved = [t for t in tags if _set_tag(session, repo, repo_id, t, manifest_id, actor, digest)]
    for t in moved:
        _event(session, "registry.push", actor, repo, t, digest, parsed.media_type)
    if created and not moved:
        _event(session, "registry.push", actor, repo, None, digest, parsed.media_type)
    return PushResult(digest=digest, subject=parsed.subject.digest if parsed.subject else None, tags=tags)


def delete_reference(session: Session, repo: str, ref: str, actor: str) -> None:
    """DELETE /manifests/<ref>: a tag deletes only the tag, a digest the manifest and its tags."""
    r = _repo_or_unknown(session, repo)
    if not looks_like_digest(ref):
        if not valid_tag(ref):
            raise manifest_unknown(ref[:200])
        tag = session.execute(select(Tag).where(Tag.repo_id == r.id, Tag.name == ref)).scalar_one_or_none()
        if tag is None:
            raise manifest_unknown(ref)
        check_tag_change(session, repo, tag, "deleted")
        digest = tag.manifest.digest
        session.delete(tag)
        _event(session, "registry.delete", actor, repo, ref, digest)
        return
    digest = str(parse_digest(ref))
    manifest = session.execute(
        select(Manifest).where(Manifest.repo_id == r.id, Manifest.digest == digest)
    ).scalar_one_or_none()
    if manifest is None:
        raise manifest_unknown(ref)
    tags = list(session.execute(select(Tag).where(Tag.manifest_id == manifest.id)).scalars())
    for t in tags:
        check_tag_change(session, repo, t, "deleted")
    for t in tags:
        session.delete(t)
        _event(session, "registry.delete", actor, repo, t.name, digest)
    session.delete(manifest)
    _event(session, "registry.delete", actor, repo, None, digest)


def _tag_order(session: Session) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return Tag.name.collate("C")
    return Tag.name


def list_tags(session: Session, repo: str, n: int | None, last: str | None) -> list[str]:
    r = _repo_or_unknown(session, repo)
    order = _tag_order(session)
    q = select(Tag.name).where(Tag.repo_id == r.id).order_by(order)
    if last:
        q = q.where(order > last)
    if n is not None:
        q = q.limit(n)
    return list(session.execute(q).scalars())


def referrers(session: Session, repo: str, subject: str, artifact_type: str | None) -> list[dict[str, Any]]:
    q = (
        select(Manifest)
        .join(RegistryRepository, RegistryRepository.id == Manifest.repo_id)
        .where(RegistryRepository.name == repo, Manifest.subject_digest == subject)
        .order_by(Manifest.id)
    )
    if artifact_type:
        q = q.where(Manifest.artifact_type == artifact_type)
    out = []
    for m in session.execute(q).scalars():
        d: dict[str, Any] = {"mediaType": m.media_type, "digest": m.digest, "size": m.size}
        if m.artifact_type:
            d["artifactType"] = m.artifact_type
        if m.annotations:
            d["annotations"] = m.annotations
        out.append(d)
    return out


def list_repositories(session: Session, n: int | None, last: str | None) -> list[str]:
    col: Any = RegistryRepository.name
    if session.get_bind().dialect.name == "postgresql":
        col = RegistryRepository.name.collate("C")
    q = select(RegistryRepository.name).order_by(col)
    if last:
        q = q.where(col > last)
    if n is not None:
        q = q.limit(n)
    return list(session.execute(q).scalars())
