"""The registry's management routes under /api/v1/registry (the OCI API itself is at /v2)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import delete, func, select

import conveyor.registry as registry_api
from conveyor.core import (
    Conflict,
    Forbidden,
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
from conveyor.registry import access, gc, lineage, policy, refresh, signing
from conveyor.registry.models import (
    AnonymousPullPrefix,
    ImmutableTagRule,
    Manifest,
    RefreshPolicy,
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
    name = _check_repo_name(body.repository)
    # A lock stops pushes to the tag, so it is set by who may push there (or manages repositories):
    # otherwise anyone could freeze another user's or another app's tags.
    if not principal.can(Permission.MANAGE_REPO) and not access.may_push(principal, name)[0]:
        raise Forbidden(f"'{principal.name}' may not push to '{name}', so may not lock its tags",
                        rule="registry.lock-scope")
    registry_api.lock_tag(session, name, body.tag, principal.name)
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


# --- supply chain: signing keys, lineage, tag history ---------------------------------------------
RUNNING_IMAGES = "registry_running_images"  # app.state: session -> {digest: ["app/env", ...]} (server.py)


def _running(request: Request) -> Any:
    fn = getattr(request.app.state, RUNNING_IMAGES, None)
    return fn if fn is not None else (lambda _s: {})


@router.get("/signing-keys")
def list_signing_keys(request: Request, session: SessionDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    """The installation's public keys (what agents and `cosign verify --key` trust), never a private key."""
    if principal.scope is None or principal.scope.cluster is None:  # agents read them with their own token
        principal.require(Permission.READ)
    signing.active_key(session, _registry(request).settings)
    return signing.list_keys(session)


@router.post("/signing-keys/rotate", status_code=201)
def rotate_signing_key(request: Request, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.require(Permission.MANAGE_USERS)
    key = signing.rotate(session, _registry(request).settings, principal.name)
    return {"key_id": key.key_id, "public_key": key.public_pem, "state": key.state}


@router.post("/signing-keys/{key_id}/revoke")
def revoke_signing_key(key_id: str, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    principal.require(Permission.MANAGE_USERS)
    key = signing.revoke(session, key_id, principal.name)
    return {"key_id": key.key_id, "state": key.state}


@router.get("/lineage")
def get_lineage(image: str, request: Request, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    """What IMAGE (``repo``, ``repo:tag`` or ``repo@digest``) was built on, what was built on it, and
    which environments run images whose base has a newer digest now."""
    principal.require(Permission.READ)
    repo, sep, digest = image.partition("@")
    ref: str | None = digest if sep else None
    if not sep:
        head, colon, tag = image.rpartition(":")
        if colon and "/" not in tag:
            repo, ref = head, tag
    return lineage.lineage(session, _check_repo_name(repo), ref, _running(request))


@router.get("/tag-history")
def tag_history(repository: str, tag: str, session: SessionDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    principal.require(Permission.READ)
    return lineage.history(session, _check_repo_name(repository), tag)


class RefreshIn(BaseModel):
    kind: Literal["upstream", "import"]
    target: str = Field(description="the pull-through prefix, or the imported repository")
    source: str | None = Field(default=None, max_length=2000, description="import: docker://HOST/REPO")
    username: str | None = None
    password: str | None = None
    insecure: bool = False
    interval_seconds: int = Field(ge=60, le=30 * 86400)
    tags: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=50)


def _policy_out(p: RefreshPolicy) -> dict[str, Any]:
    def when(at: datetime | None) -> str | None:
        return at.isoformat() if at else None

    return {"id": p.id, "kind": p.kind, "target": p.target, "source": p.source, "username": p.username,
            "insecure": p.insecure, "interval_seconds": p.interval_seconds, "tags": list(p.tags or []),
            "created_by": p.created_by, "last_run_at": when(p.last_run_at), "last_ok_at": when(p.last_ok_at),
            "failing_since": when(p.failing_since), "last_error": p.last_error}


@router.get("/refresh-policies")
def list_refresh_policies(session: SessionDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    principal.require(Permission.READ)
    return [_policy_out(p) for p in session.execute(select(RefreshPolicy).order_by(RefreshPolicy.id)).scalars()]


@router.post("/refresh-policies", status_code=201)
def add_refresh_policy(body: RefreshIn, session: SessionDep, principal: PrincipalDep) -> dict[str, Any]:
    """Keep a cached third-party repository current: every interval, its matching tags are resolved upstream."""
    principal.require(Permission.MANAGE_REPO)
    target = _check_prefix(body.target)
    if body.kind == "upstream":
        if session.execute(select(Upstream).where(Upstream.prefix == target)).scalar_one_or_none() is None:
            raise NotFound(f"'{target}' is not a pull-through prefix", rule="registry.refresh-target")
    elif not (body.source or "").startswith("docker://"):
        raise InvalidInput("an import's refresh source is docker://HOST/REPO", rule="registry.refresh-source")
    for pattern in body.tags:
        if not valid_tag(pattern.replace("*", "a").replace("?", "a").replace("[", "").replace("]", "")):
            raise InvalidInput(f"'{pattern}' can never match a tag", rule="registry.tag-pattern")
    if session.execute(select(RefreshPolicy).where(RefreshPolicy.target == target)).scalar_one_or_none():
        raise Conflict(f"'{target}' already has a refresh policy", rule="registry.refresh-unique")
    row = RefreshPolicy(kind=body.kind, target=target, source=body.source, username=body.username,
                        password=body.password, insecure=body.insecure, interval_seconds=body.interval_seconds,
                        tags=list(body.tags), created_by=principal.name)
    session.add(row)
    session.flush()
    record(session, actor=principal.name, action="registry.refresh_policy.added", target=target,
           payload={"kind": body.kind, "target": target, "interval_seconds": body.interval_seconds,
                    "tags": body.tags})
    return _policy_out(row)


@router.delete("/refresh-policies/{policy_id}", status_code=204)
def remove_refresh_policy(policy_id: int, session: SessionDep, principal: PrincipalDep) -> None:
    principal.require(Permission.MANAGE_REPO)
    row = session.get(RefreshPolicy, policy_id)
    if row is None:
        raise NotFound(f"no refresh policy {policy_id}", rule="registry.refresh-unknown")
    session.delete(row)
    record(session, actor=principal.name, action="registry.refresh_policy.removed", target=row.target)


@router.post("/refresh-policies/{policy_id}/run")
def run_refresh_policy(policy_id: int, request: Request, principal: PrincipalDep) -> dict[str, Any]:
    """Refresh now (the background refresher does it every interval)."""
    principal.require(Permission.MANAGE_REPO)
    report = refresh.run_policy(_registry(request), policy_id)
    if report.target == "?":
        raise NotFound(f"no refresh policy {policy_id}", rule="registry.refresh-unknown")
    return report.as_dict()
