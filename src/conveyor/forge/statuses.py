"""Commit statuses, GitHub-style: the checks that protected branches can require.

Contexts under ``conveyor/`` are reserved and each has an owning identity (``CONTEXT_OWNERS``):
only that identity posts it (403 ``status.reserved-context`` for anyone else, admins included),
and a required check is satisfied only by its owner's status — GitHub's "expected source" on
required checks, made the only way. A run's token may post its own pipeline's context on its own
commit, but never ``success``: that is the pipelines service's word once the run has passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import Forbidden, InvalidInput, NotFound, Permission, Principal, Settings, agent_name, record
from conveyor.forge.models import CommitStatus, Repository
from conveyor.forge.repos import bare

STATES = ("pending", "success", "failure", "error")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_CONTEXT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")
RESERVED = "conveyor/"
PIPELINES, DELIVERY = "conveyor-pipelines", "conveyor-delivery"
# Reserved contexts and who owns them. `conveyor/deploy/<cluster>/...` belongs to that cluster's agent.
CONTEXT_OWNERS: tuple[tuple[str, str], ...] = (
    ("conveyor/pr", PIPELINES),
    ("conveyor/ci", PIPELINES),
    ("conveyor/diff", DELIVERY),
    ("conveyor/environments", DELIVERY),
    ("conveyor/cd/", DELIVERY),
    ("conveyor/deploy/", "agent"),
)


def owner_of(context: str) -> str | None:
    """The identity that owns a reserved context; None for contexts anyone may post; "" for reserved
    contexts that nobody owns (nobody may post them). A context that spells the reserved prefix in
    other letter case (``Conveyor/ci``) is reserved for no one: it would pass for Conveyor's own."""
    if not context.startswith(RESERVED):
        return "" if context.lower().startswith(RESERVED) else None
    for pattern, owner in CONTEXT_OWNERS:
        if pattern.endswith("/") and context.startswith(pattern):
            if owner == "agent":
                cluster, _, sync = context[len(pattern):].partition("/")
                return agent_name(cluster) if cluster and sync else ""
            return owner
        if context == pattern:
            return owner
    return ""


def accepted_creator(context: str, creator: str) -> bool:
    """Whether a stored status of ``context`` by ``creator`` speaks for the context's owner."""
    owner = owner_of(context)
    if owner is None:
        return True
    return bool(owner) and (creator == owner or creator.startswith(f"{owner}/run-"))


def check_may_post(principal: Principal, repo: Repository, sha: str, context: str, state: str) -> None:
    owner = owner_of(context)
    if owner is None:
        if principal.scope is not None:
            principal.require(Permission.WRITE)  # narrowed tokens post only what their scope names
        return
    if principal.scope is not None and principal.scope.may_post_status(repo.name, repo.kind, sha, context, state):
        return
    if owner and principal.is_service(owner):
        return
    who = f"'{owner}'" if owner else "no one (not a context Conveyor posts)"
    raise Forbidden(f"'{context}' is a reserved context: only {who} may post it", rule="status.reserved-context",
                    owner=owner or None)


@dataclass(frozen=True)
class StatusView:
    context: str
    state: str
    description: str
    target_url: str
    creator: str
    updated_at: datetime


@dataclass(frozen=True)
class CombinedStatus:
    sha: str
    state: str  # success | pending | failure
    statuses: list[StatusView]

    def by_context(self) -> dict[str, StatusView]:
        return {s.context: s for s in self.statuses}


def post_status(
    session: Session,
    settings: Settings,
    principal: Principal,
    repo: Repository,
    sha: str,
    *,
    state: str,
    context: str,
    description: str = "",
    target_url: str = "",
) -> CommitStatus:
    if not _SHA.match(sha):
        raise InvalidInput("sha must be a full 40-character lowercase hex commit id", rule="status.sha")
    if state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}", rule="status.state")
    if not _CONTEXT.match(context):
        raise InvalidInput(f"invalid status context '{context}'", rule="status.context")
    check_may_post(principal, repo, sha, context, state)
    if not bare(settings, repo).has_commit(sha):
        raise NotFound(f"commit {sha} is not in repository '{repo.name}'", rule="status.commit-exists")
    row = CommitStatus(
        repo_id=repo.id,
        sha=sha,
        context=context,
        state=state,
        description=description[:1000],
        target_url=target_url[:2000],
        creator=principal.label,
    )
    session.add(row)
    session.flush()
    record(
        session,
        actor=principal.label,
        action="status",
        target=f"{repo.name}@{sha[:12]}",
        payload={
            "repo": repo.name,
            "sha": sha,
            "state": state,
            "context": context,
            "description": row.description,
            "target_url": row.target_url,
        },
    )
    return row


def combined_status(session: Session, repo: Repository, sha: str) -> CombinedStatus:
    rows = session.execute(
        select(CommitStatus)
        .where(CommitStatus.repo_id == repo.id, CommitStatus.sha == sha)
        .order_by(CommitStatus.id)
    ).scalars()
    latest: dict[str, CommitStatus] = {}
    for r in rows:
        if accepted_creator(r.context, r.creator):
            latest[r.context] = r
    views = [
        StatusView(r.context, r.state, r.description, r.target_url, r.creator, r.created_at)
        for r in sorted(latest.values(), key=lambda r: r.context)
    ]
    states = {v.state for v in views}
    if states & {"failure", "error"}:
        overall = "failure"
    elif not views or "pending" in states:
        overall = "pending"
    else:
        overall = "success"
    return CombinedStatus(sha, overall, views)


def is_sha(value: str) -> bool:
    return bool(_SHA.match(value))
