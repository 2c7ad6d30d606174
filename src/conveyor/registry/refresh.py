"""Refreshing cached third-party repositories on a schedule: a pull-through prefix or an import.

A policy names what it refreshes (``upstream``: every cached repository under a pull-through prefix;
``import``: one imported repository and its ``docker://`` source), how often and which tags (glob
patterns; a literal tag is fetched even when it is not cached yet). A refresh resolves each tag
upstream; when the digest changed it copies the new image in whole (manifests and blobs, every digest
verified, through the same ``importer.copy`` as ``conveyor registry import``) and moves the tag. The
old digest stays pullable (``registry_tag_history``; GC keeps the last ones of each tag) and the move is
an event (``registry.cache.refreshed``; ``registry.base.updated`` too when images were built on it).

An unreachable or failing upstream changes nothing: the cached digest keeps serving, the policy
records ``failing_since`` and the error, and ``registry.cache.refresh_failed`` is recorded once when it
starts failing (``registry.cache.refresh_recovered`` when it works again).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import record, utcnow
from conveyor.core.background import BackgroundLoop
from conveyor.registry import blobs, manifests
from conveyor.registry.client import RegistryClient, RegistryClientError
from conveyor.registry.importer import ImportError_, RegistrySource, copy
from conveyor.registry.models import RefreshPolicy, RegistryRepository, Tag
from conveyor.registry.names import glob_matches, split_reference
from conveyor.registry.repos import in_transaction
from conveyor.registry.service import Registry, UpstreamConfig

log = logging.getLogger(__name__)


class RefreshKind(StrEnum):
    UPSTREAM = "upstream"
    IMPORT = "import"


@dataclass
class RefreshReport:
    policy: int
    target: str
    checked: list[str] = field(default_factory=list)
    moved: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "target": self.target, "checked": self.checked, "moved": self.moved,
                "error": self.error}


class LocalDestination:
    """``importer.copy``'s destination when the server itself writes into its registry."""

    def __init__(self, reg: Registry, actor: str) -> None:
        self.reg, self.actor = reg, actor

    async def push_blob(self, repo: str, digest: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        if await asyncio.to_thread(blobs.mount, self.reg, repo, self.actor, digest, None):
            return
        algorithm, _, want = digest.partition(":")
        h = hashlib.new(algorithm)
        self.reg.store.ensure()
        tmp = self.reg.store.tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as f:
                async for chunk in chunks:
                    h.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            if h.hexdigest() != want:
                raise ImportError_(f"blob {digest} failed verification")
            await asyncio.to_thread(blobs.commit_blob, self.reg, repo, self.actor, digest, size,
                                    blobs.publish_file(self.reg, tmp, digest))
        finally:
            tmp.unlink(missing_ok=True)

    async def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        result = await asyncio.to_thread(in_transaction, self.reg.db, lambda s: manifests.put(
            s, repo, ref, body, media_type, self.actor))
        return result.digest


def _source(upstreams: list[UpstreamConfig], policy: RefreshPolicy, repository: str) -> tuple[RegistryClient, str]:
    if policy.kind == RefreshKind.UPSTREAM:
        up = next((u for u in upstreams if u.prefix == policy.target), None)
        if up is None:
            raise ImportError_(f"the pull-through prefix '{policy.target}' has no upstream any more")
        return RegistryClient(up.url, up.username, up.password, timeout=60), repository[len(up.prefix) + 1:]
    spec = str(policy.source or "")
    if not spec.startswith("docker://"):
        raise ImportError_("import refresh sources look like docker://HOST/REPO")
    host, _, path = spec[len("docker://"):].partition("/")
    repo, _tag = split_reference(path)
    url = f"{'http' if policy.insecure else 'https'}://{host}"
    return RegistryClient(url, policy.username, policy.password, verify=not policy.insecure, timeout=60), repo


def _work(session: Session, policy: RefreshPolicy) -> list[tuple[str, str, str | None]]:
    """(repository, tag, cached digest) to refresh."""
    if policy.kind == RefreshKind.UPSTREAM:
        q = select(RegistryRepository.name, Tag.name).join(Tag, Tag.repo_id == RegistryRepository.id).where(
            RegistryRepository.name.startswith(policy.target + "/"))
    else:
        q = select(RegistryRepository.name, Tag.name).join(Tag, Tag.repo_id == RegistryRepository.id).where(
            RegistryRepository.name == policy.target)
    pairs = {(r, t) for r, t in session.execute(q).tuples() if any(glob_matches(p, t) for p in policy.tags)}
    if policy.kind == RefreshKind.IMPORT:
        pairs |= {(policy.target, p) for p in policy.tags if not any(ch in p for ch in "*?[")}
    out = []
    for repo, tag in sorted(pairs):
        cached = None
        try:
            cached = manifests.lookup(session, repo, tag, with_content=False).digest
        except Exception:  # noqa: BLE001 - not cached yet
            cached = None
        out.append((repo, tag, cached))
    return out


async def _refresh_tag(reg: Registry, upstreams: list[UpstreamConfig], policy: RefreshPolicy, repo: str, tag: str,
                       cached: str | None, report: RefreshReport) -> None:
    client, remote = _source(upstreams, policy, repo)
    try:
        fetched = await client.get_manifest(remote, tag)
        report.checked.append(f"{repo}:{tag}")
        if fetched.digest == cached:
            return
        await copy(RegistrySource(client, remote), tag, LocalDestination(reg, f"refresh:{policy.id}"), repo, tag)
        report.moved.append({"repository": repo, "tag": tag, "old_digest": cached or "", "new_digest": fetched.digest})
    finally:
        await client.close()


def run_policy(reg: Registry, policy_id: int) -> RefreshReport:
    """Refresh one policy now; records its outcome (and the events) whatever happens."""
    with reg.db.session() as s:
        policy = s.get(RefreshPolicy, policy_id)
        if policy is None:
            return RefreshReport(policy_id, "?", error="no such policy")
        s.expunge(policy)
        work = _work(s, policy)
    report = RefreshReport(policy.id, policy.target)

    async def run_all(upstreams: list[UpstreamConfig]) -> None:
        for repo, tag, cached in work:
            await _refresh_tag(reg, upstreams, policy, repo, tag, cached, report)

    try:
        # The upstreams are read before the loop starts: no database session inside it (db.off-event-loop).
        asyncio.run(run_all(reg.upstreams()))
    except (RegistryClientError, httpx.HTTPError, ImportError_, OSError) as exc:
        report.error = f"{type(exc).__name__}: {exc}"[:1000]
    except Exception as exc:  # noqa: BLE001 - a refused tag move (locked, immutable) or a bad manifest
        report.error = f"{type(exc).__name__}: {exc}"[:1000]
    _record(reg, policy_id, report)
    return report


def _record(reg: Registry, policy_id: int, report: RefreshReport) -> None:
    with reg.db.session() as s:
        policy = s.get(RefreshPolicy, policy_id)
        if policy is None:
            return
        now = utcnow()
        policy.last_run_at = now
        actor = f"refresh:{policy.id}"
        for m in report.moved:
            record(s, actor=actor, action="registry.cache.refreshed", target=f"{m['repository']}:{m['tag']}",
                   payload={**m, "policy": policy.id, "kind": policy.kind})
        if report.error is None:
            if policy.failing_since is not None:
                record(s, actor=actor, action="registry.cache.refresh_recovered", target=policy.target,
                       payload={"policy": policy.id, "target": policy.target})
            policy.last_ok_at, policy.failing_since, policy.last_error = now, None, None
            return
        if policy.failing_since is None:
            policy.failing_since = now
            record(s, actor=actor, action="registry.cache.refresh_failed", target=policy.target,
                   payload={"policy": policy.id, "target": policy.target, "error": report.error})
        policy.last_error = report.error
        log.warning("refresh of %s failed (cached digests keep serving): %s", policy.target, report.error)


def due(reg: Registry) -> list[int]:
    now = utcnow()
    with reg.reads() as s:
        return [p.id for p in s.execute(select(RefreshPolicy)).scalars()
                if p.last_run_at is None or now - p.last_run_at >= timedelta(seconds=p.interval_seconds)]


class CacheRefresher(BackgroundLoop):
    """Runs the refresh policies that are due (every policy at most once per its interval)."""

    name = "registry-refresh"

    def __init__(self, reg: Registry, poll: float = 15.0) -> None:
        super().__init__(poll_interval=poll)
        self.reg = reg

    def run_once(self) -> bool:
        for pid in due(self.reg):
            run_policy(self.reg, pid)
        return False
