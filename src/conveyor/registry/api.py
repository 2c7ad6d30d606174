"""The registry's management routes under /api/v1/registry (the OCI API itself is at /v2)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import delete, func, select

import conveyor.registry as registry_api
from conveyor.core import (
    Conflict,
    InvalidInput,
    NotFound,
    OutboundPolicy,
    Permission,
    PrincipalDep,
    SessionDep,
    after_commit,
    record,
)
from conveyor.core.limits import NameText, SecretText, UrlText
from conveyor.registry import gc, policy
from conveyor.registry.models import (
    AnonymousPullPrefix,
    ImmutableTagRule,
    Manifest,
    RegistryRepository,
    Tag,
    Upstream,
)
from conveyor.registry.names import valid_name, valid_tag
from conveyor.registry.service import Registry

router = APIRouter(prefix="/api/v1/registry", tags=["registry"])


def _registry(request: Request) -> Registry:
    reg: Registry = request.app.state.registry
    return reg


def _check_repo_name(name: str) -> str:
    if not valid_name(name):
        raise InvalidInput(f"invalid repository name '{name}'", rule="registry.name")
    return name


def _check_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if not valid_name(prefix):
        raise InvalidInput(f"invalid repository prefix '{prefix}'", rule="registry.prefix")
    return prefix


class RepositoryOut(BaseModel):
    name: str
    tags: int
    created_at: datetime


class TagOut(BaseModel):
    name: str
    digest: str
    media_type: str
    updated_by: str
    updated_at: datetime
    locked: bool
    locked_by: str | None


class TagRef(BaseModel):
    repository: NameText
    tag: NameText


class ImmutableRule(BaseModel):
    repository: NameText
    pattern: str = Field(min_length=1, max_length=128)


class PrefixIn(BaseModel):
    prefix: NameText


class UpstreamIn(BaseModel):
    prefix: NameText
    url: UrlText = Field(min_length=1)
    username: NameText | None = None
    password: SecretText | None = None


class UpstreamOut(BaseModel):
    prefix: str
    url: str
    username: str | None
    created_by: str


class GcIn(BaseModel):
    dry_run: bool = False
    grace_seconds: float = Field(default=gc.DEFAULT_GRACE, ge=0, le=10 * 365 * 86400)  # a timedelta beyond overflows


@router.get("/repositories", response_model=list[RepositoryOut])
def list_repositories(session: SessionDep, principal: PrincipalDep) -> list[RepositoryOut]:
    principal.require(Permission.READ)
    counts = dict(session.execute(select(Tag.repo_id, func.count()).group_by(Tag.repo_id)).all())
    return [
        RepositoryOut(name=r.name, tags=int(counts.get(r.id, 0)), created_at=r.created_at)
        for r in session.execute(select(RegistryRepository).order_by(RegistryRepository.name)).scalars()
    ]


@router.get("/tags", response_model=list[TagOut])
def list_tags(repository: str, session: SessionDep, principal: PrincipalDep) -> list[TagOut]:
    principal.require(Permission.READ)
    rows = session.execute(
        select(Tag, Manifest.digest, Manifest.media_type)
        .join(Manifest, Manifest.id == Tag.manifest_id)
        .join(RegistryRepository, RegistryRepository.id == Tag.repo_id)
        .where(RegistryRepository.name == _check_repo_name(repository))
        .order_by(Tag.name)
    ).all()
    return [
        TagOut(name=t.name, digest=d, media_type=mt, updated_by=t.updated_by, updated_at=t.updated_at,
               locked=t.locked, locked_by=t.locked_by)
        for t, d, mt in rows
    ]


def _tag_out(session: SessionDep, t: Tag) -> TagOut:
    m = t.manifest
    return TagOut(name=t.name, digest=m.digest, media_type=m.media_type, updated_by=t.updated_by,
                  updated_at=t.updated_at, locked=t.locked, locked_by=t.locked_by)


@router.post("/locks", response_model=TagOut)
def lock_tag(body: TagRef, session: SessionDep, principal: PrincipalDep) -> TagOut:
    """Lock a (deployed) tag: pushing over it or deleting it is refused until it is unlocked."""
    principal.require(Permission.WRITE)
    registry_api.lock_tag(session, _check_repo_name(body.repository), body.tag, principal.name)
    return _tag_out(session, policy.get_tag(session, body.repository, body.tag))


@router.delete("/locks", response_model=TagOut)
def unlock_tag(repository: str, tag: str, session: SessionDep, principal: PrincipalDep) -> TagOut:
    principal.require(Permission.MANAGE_REPO)
    registry_api.unlock_tag(session, _check_repo_name(repository), tag, principal.name)
    return _tag_out(session, policy.get_tag(session, repository, tag))


@router.get("/locks", response_model=list[dict[str, Any]])
def list_locks(session: SessionDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    principal.require(Permission.READ)
    rows = session.execute(
        select(RegistryRepository.name, Tag, Manifest.digest)
        .join(Tag, Tag.repo_id == RegistryRepository.id)
        .join(Manifest, Manifest.id == Tag.manifest_id)
        .where(Tag.locked.is_(True))
        .order_by(RegistryRepository.name, Tag.name)
    ).all()
    return [
        {"repository": r, "tag": t.name, "digest": d, "locked_by": t.locked_by,
         "locked_at": t.locked_at.isoformat() if t.locked_at else None}
        for r, t, d in rows
    ]


@router.get("/immutable-tags", response_model=list[ImmutableRule])
def list_immutable(session: SessionDep, principal: PrincipalDep) -> list[ImmutableRule]:
    principal.require(Permission.READ)
    rows = session.execute(select(ImmutableTagRule).order_by(ImmutableTagRule.repository, ImmutableTagRule.pattern))
    return [ImmutableRule(repository=r.repository, pattern=r.pattern) for r in rows.scalars()]


@router.post("/immutable-tags", response_model=ImmutableRule, status_code=201)
def add_immutable(body: ImmutableRule, session: SessionDep, principal: PrincipalDep) -> ImmutableRule:
    principal.require(Permission.MANAGE_REPO)
    repo = _check_prefix(body.repository)
    probe = body.pattern.replace("*", "a").replace("?", "a").replace("[", "").replace("]", "")
    if not valid_tag(probe):
        raise InvalidInput(f"'{body.pattern}' can never match a tag", rule="registry.tag-pattern")
    exists = session.execute(select(ImmutableTagRule).where(
        ImmutableTagRule.repository == repo, ImmutableTagRule.pattern == body.pattern)).scalar_one_or_none()
    if exists is None:
        session.add(ImmutableTagRule(repository=repo, pattern=body.pattern, created_by=principal.name))
        record(session, actor=principal.name, action="registry.immutable.added", target=repo,
               payload={"repository": repo, "pattern": body.pattern})
    return ImmutableRule(repository=repo, pattern=body.pattern)


@router.delete("/immutable-tags", status_code=204)
def remove_immutable(repository: str, pattern: str, session: SessionDep, principal: PrincipalDep) -> None:
    principal.require(Permission.MANAGE_REPO)
    res = session.execute(delete(ImmutableTagRule).where(
        ImmutableTagRule.repository == repository.strip("/"), ImmutableTagRule.pattern == pattern))
    if not res.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"no immutable-tag rule '{pattern}' on '{repository}'")
    record(session, actor=principal.name, action="registry.immutable.removed", target=repository,
           payload={"repository": repository, "pattern": pattern})


@router.get("/anonymous-prefixes", response_model=list[str])
def list_anonymous(session: SessionDep, principal: PrincipalDep) -> list[str]:
    principal.require(Permission.READ)
    return list(session.execute(select(AnonymousPullPrefix.prefix).order_by(AnonymousPullPrefix.prefix)).scalars())


@router.post("/anonymous-prefixes", status_code=201, response_model=PrefixIn)
def add_anonymous(body: PrefixIn, request: Request, session: SessionDep, principal: PrincipalDep) -> PrefixIn:
    principal.require(Permission.MANAGE_REPO)
    prefix = _check_prefix(body.prefix)
    if session.get(AnonymousPullPrefix, prefix) is None:
        session.add(AnonymousPullPrefix(prefix=prefix, created_by=principal.name))
        record(session, actor=principal.name, action="registry.anonymous.added", target=prefix)
    reg = _registry(request)
    after_commit(session, reg.invalidate_policies)
    return PrefixIn(prefix=prefix)


@router.delete("/anonymous-prefixes", status_code=204)
def remove_anonymous(prefix: str, request: Request, session: SessionDep, principal: PrincipalDep) -> None:
    principal.require(Permission.MANAGE_REPO)
    row = session.get(AnonymousPullPrefix, prefix.strip("/"))
    if row is None:
        raise NotFound(f"'{prefix}' is not an anonymous-pull prefix")
    session.delete(row)
    record(session, actor=principal.name, action="registry.anonymous.removed", target=prefix)
    after_commit(session, _registry(request).invalidate_policies)


@router.get("/upstreams", response_model=list[UpstreamOut])
def list_upstreams(session: SessionDep, principal: PrincipalDep) -> list[UpstreamOut]:
    principal.require(Permission.READ)
    return [
        UpstreamOut(prefix=u.prefix, url=u.url, username=u.username, created_by=u.created_by)
        for u in session.execute(select(Upstream).order_by(Upstream.prefix)).scalars()
    ]


@router.post("/upstreams", status_code=201, response_model=UpstreamOut)
def add_upstream(body: UpstreamIn, request: Request, session: SessionDep, principal: PrincipalDep) -> UpstreamOut:
    principal.require(Permission.MANAGE_REPO)
    prefix = _check_prefix(body.prefix)
    if not body.url.startswith(("http://", "https://")):
        raise InvalidInput("the upstream URL must start with http:// or https://", rule="registry.upstream-url")
    OutboundPolicy.for_session(session, _registry(request).settings).check_url(body.url)
    if session.execute(select(Upstream).where(Upstream.prefix == prefix)).scalar_one_or_none() is not None:
        raise Conflict(f"prefix '{prefix}' already has an upstream", rule="registry.upstream-unique")
    session.add(Upstream(prefix=prefix, url=body.url.rstrip("/"), username=body.username, password=body.password,
                         created_by=principal.name))
    record(session, actor=principal.name, action="registry.upstream.added", target=prefix,
           payload={"prefix": prefix, "url": body.url})
    after_commit(session, _registry(request).invalidate_policies)
    return UpstreamOut(prefix=prefix, url=body.url.rstrip("/"), username=body.username, created_by=principal.name)


@router.delete("/upstreams", status_code=204)
def remove_upstream(prefix: str, request: Request, session: SessionDep, principal: PrincipalDep) -> None:
    principal.require(Permission.MANAGE_REPO)
    res = session.execute(delete(Upstream).where(Upstream.prefix == prefix.strip("/")))
    if not res.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"no upstream for prefix '{prefix}'")
    record(session, actor=principal.name, action="registry.upstream.removed", target=prefix)
    after_commit(session, _registry(request).invalidate_policies)


@router.post("/gc")
def garbage_collect(body: GcIn, request: Request, principal: PrincipalDep) -> dict[str, Any]:
    """Remove unreferenced manifests and blobs (safe while serving; see registry.gc)."""
    principal.require(Permission.MANAGE_REPO)
    return gc.collect(_registry(request), dry_run=body.dry_run, grace=body.grace_seconds,
                      actor=principal.name).as_dict()
