"""Commit statuses, GitHub-style: the checks that protected branches can require."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import InvalidInput, NotFound, Principal, Settings, record
from conveyor.forge.models import CommitStatus, Repository
from conveyor.forge.repos import bare

STATES = ("pending", "success", "failure", "error")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_CONTEXT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")


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
    if not bare(settings, repo).has_commit(sha):
        raise NotFound(f"commit {sha} is not in repository '{repo.name}'", rule="status.commit-exists")
    row = CommitStatus(
        repo_id=repo.id,
        sha=sha,
        context=context,
        state=state,
        description=description[:1000],
        target_url=target_url[:2000],
        creator=principal.name,
    )
    session.add(row)
    session.flush()
    record(
        session,
        actor=principal.name,
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
