"""Lineage: which image was built on which base, and what follows when a base moves.

buildah writes ``org.opencontainers.image.base.name`` and ``.base.digest`` into every image it builds
(measured with buildah 1.28: the name as the Dockerfile's ``FROM`` resolved it, the digest of the base's
manifest in its registry). The registry records them when such a manifest is pushed (one row per
image), so "what was built on ``cache/debian-python:12``" is an indexed query.

When a tag moves (a push over it, a cache refresh, ``conveyor image base --refresh``), the digest it
had is kept in ``registry_tag_history``; if images were built on that tag, ``registry.base.updated``
is recorded with the repositories whose newest image was built on an older digest of it (and the
source repository each ``apps/`` repository is bound to): the rebuilds' trigger.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from conveyor.core import record
from conveyor.registry.models import AppBinding, Lineage, Manifest, RegistryRepository, Tag, TagHistory

BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"
KEEP_PREVIOUS = 3  # previous digests of a tag that garbage collection keeps
HISTORY_ROWS = 50  # history rows kept per tag

# host:port names under which clients reach this registry (set by Registry at start-up)
_local_hosts: set[str] = set()


def set_local_hosts(hosts: set[str]) -> None:
    _local_hosts.clear()
    _local_hosts.update(hosts)


def split_base(name: str) -> tuple[str | None, str | None]:
    """(repository, tag) in this registry for a base image name, or (None, None) for another registry's."""
    ref = name.split("@", 1)[0]
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if first not in _local_hosts:
            return None, None
        ref = rest
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repo, tag


def record_image(session: Session, repository: str, digest: str, annotations: dict[str, str] | None) -> None:
    """Called for every new manifest: record its base when it names one."""
    if not annotations or not annotations.get(BASE_NAME) or not annotations.get(BASE_DIGEST):
        return
    if session.execute(select(Lineage.id).where(Lineage.repository == repository, Lineage.digest == digest)).first():
        return
    base_repo, base_tag = split_base(annotations[BASE_NAME])
    base_digest = annotations[BASE_DIGEST][:160]
    if base_repo is not None and not _has_manifest(session, base_repo, base_digest):
        # Measured in tests/registry/test_supply_chain.py: for a base pushed by skopeo from an OCI archive,
        # buildah 1.28 recorded a digest this registry never held (cause not established). The digest the
        # base's tag has now, as the image is pushed right after its build, is what the build pulled.
        base_digest = current_digest(session, base_repo, base_tag) or base_digest
    session.add(Lineage(repository=repository, digest=digest, base_name=annotations[BASE_NAME][:500],
                        base_digest=base_digest, base_repository=base_repo, base_tag=base_tag))


def _has_manifest(session: Session, repository: str, digest: str) -> bool:
    return session.execute(select(Manifest.id).join(RegistryRepository, RegistryRepository.id == Manifest.repo_id)
                           .where(RegistryRepository.name == repository, Manifest.digest == digest)).first() is not None


def newest_per_repository(session: Session, base_repo: str, base_tag: str | None = None) -> list[Lineage]:
    """Per image repository, its newest image, if that one was built on ``base_repo`` (``:base_tag``)."""
    newest = (select(func.max(Lineage.id)).group_by(Lineage.repository)).scalar_subquery()
    q = select(Lineage).where(Lineage.id.in_(newest), Lineage.base_repository == base_repo)
    if base_tag is not None:
        q = q.where(Lineage.base_tag == base_tag)
    return list(session.execute(q.order_by(Lineage.repository)).scalars())


def tag_moved(session: Session, repository: str, tag: str, old_digest: str, new_digest: str, actor: str) -> None:
    """Keep where the tag pointed; announce the move when images were built on it."""
    session.add(TagHistory(repository=repository, tag=tag, digest=old_digest, replaced_by=new_digest, actor=actor))
    session.flush()
    stale = select(TagHistory.id).where(TagHistory.repository == repository, TagHistory.tag == tag) \
        .order_by(TagHistory.id.desc()).offset(HISTORY_ROWS)
    session.execute(delete(TagHistory).where(TagHistory.id.in_(stale.scalar_subquery())))
    if repository.startswith("apps/"):
        return
    affected = [row for row in newest_per_repository(session, repository, tag) if row.base_digest != new_digest]
    if not affected:
        return
    bindings = dict(session.execute(select(AppBinding.repository, AppBinding.source_repo).where(
        AppBinding.repository.in_([a.repository for a in affected]))).tuples().all())
    record(session, actor=actor, action="registry.base.updated", target=f"{repository}:{tag}", payload={
        "repository": repository, "tag": tag, "old_digest": old_digest, "new_digest": new_digest,
        "images": [{"repository": a.repository, "digest": a.digest, "base_digest": a.base_digest,
                    "source_repo": bindings.get(a.repository)} for a in affected]})


def kept_previous(session: Session) -> set[tuple[str, str]]:
    """(repository, digest) of the previous digests of each tag that GC keeps."""
    rows = session.execute(select(TagHistory.repository, TagHistory.tag, TagHistory.digest)
                           .order_by(TagHistory.id.desc())).all()
    seen: dict[tuple[str, str], int] = {}
    out = set()
    for repo, tag, digest in rows:
        n = seen.get((repo, tag), 0)
        if n < KEEP_PREVIOUS:
            out.add((repo, digest))
        seen[(repo, tag)] = n + 1
    return out


# --- queries ---------------------------------------------------------------------------------------
def _tags_by_digest(session: Session, repository: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, digest in session.execute(
            select(Tag.name, Manifest.digest).join(Manifest, Manifest.id == Tag.manifest_id)
            .join(RegistryRepository, RegistryRepository.id == Tag.repo_id)
            .where(RegistryRepository.name == repository).order_by(Tag.name)).tuples():
        out.setdefault(digest, []).append(name)
    return out


def current_digest(session: Session, repository: str | None, tag: str | None) -> str | None:
    if repository is None or tag is None:
        return None
    return session.execute(
        select(Manifest.digest).join(Tag, Tag.manifest_id == Manifest.id)
        .join(RegistryRepository, RegistryRepository.id == Tag.repo_id)
        .where(RegistryRepository.name == repository, Tag.name == tag)).scalar_one_or_none()


def _entry(session: Session, row: Lineage, running: dict[str, list[str]], tags: dict[str, list[str]]
           ) -> dict[str, Any]:
    now = current_digest(session, row.base_repository, row.base_tag)
    return {"repository": row.repository, "digest": row.digest, "tags": tags.get(row.digest, []),
            "base": {"name": row.base_name, "digest": row.base_digest, "repository": row.base_repository,
                     "tag": row.base_tag, "current_digest": now, "outdated": bool(now and now != row.base_digest)},
            "running_in": running.get(row.digest, []), "recorded_at": row.recorded_at.isoformat()}


def lineage(session: Session, repository: str, reference: str | None,
            running: Callable[[Session], dict[str, list[str]]]) -> dict[str, Any]:
    """What ``repository`` (or one image of it) was built on, what was built on it, and which
    environments run images whose base has moved on since."""
    runs = running(session)
    digest = reference if reference and reference.startswith("sha256:") else \
        current_digest(session, repository, reference) if reference else None
    q = select(Lineage).where(Lineage.repository == repository)
    if digest:
        q = q.where(Lineage.digest == digest)
    own_tags = _tags_by_digest(session, repository)
    built_on = [_entry(session, r, runs, own_tags) for r in session.execute(q.order_by(Lineage.id.desc())).scalars()]
    q2 = select(Lineage).where(Lineage.base_repository == repository)
    if reference and not reference.startswith("sha256:"):
        # A tag: every image built from it, on whichever digest it had then (the ones built on an older
        # digest are the outdated ones, which is what this listing is for), and any built on its current
        # digest by another name.
        q2 = q2.where(or_(Lineage.base_tag == reference, Lineage.base_digest == digest) if digest
                      else Lineage.base_tag == reference)
    elif digest:
        q2 = q2.where(Lineage.base_digest == digest)
    derived_rows = list(session.execute(q2.order_by(Lineage.repository, Lineage.id.desc())).scalars())
    tag_cache: dict[str, dict[str, list[str]]] = {}
    derived = []
    for r in derived_rows:
        if r.repository not in tag_cache:
            tag_cache[r.repository] = _tags_by_digest(session, r.repository)
        derived.append(_entry(session, r, runs, tag_cache[r.repository]))
    outdated = [{"where": where, "repository": e["repository"], "digest": e["digest"], "base": e["base"]["name"],
                 "base_digest": e["base"]["digest"], "current_base_digest": e["base"]["current_digest"]}
                for e in built_on + derived if e["base"]["outdated"] for where in e["running_in"]]
    return {"repository": repository, "reference": reference, "digest": digest, "built_on": built_on,
            "built_from_it": derived, "outdated_running": outdated}


def history(session: Session, repository: str, tag: str) -> list[dict[str, Any]]:
    rows = session.execute(select(TagHistory).where(TagHistory.repository == repository, TagHistory.tag == tag)
                           .order_by(TagHistory.id.desc())).scalars()
    return [{"digest": h.digest, "replaced_by": h.replaced_by, "replaced_at": h.replaced_at.isoformat(),
             "actor": h.actor} for h in rows]
