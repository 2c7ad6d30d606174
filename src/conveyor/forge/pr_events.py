"""What a moving branch does to the pull requests that use it, and the payload of every PR event.

Both pushes (`pushes.apply_push`) and merges (`pulls.finish_merge`) move branches; this module is
below both, so that neither has to import the other lazily to break a cycle.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import Settings, record, utcnow
from conveyor.forge.models import PullRequest, Repository
from conveyor.forge.repos import write_protection_file


def pr_payload(repo: Repository, pr: PullRequest, **extra: Any) -> dict[str, Any]:
    return {
        "repo": repo.name,
        "number": pr.number,
        "title": pr.title,
        "author": pr.author,
        "source_branch": pr.source_branch,
        "target_branch": pr.target_branch,
        "head_sha": pr.head_sha,
        "base_sha": pr.base_sha,
        "state": pr.state,
        **extra,
    }


def sync_branch(
    session: Session, settings: Settings, repo: Repository, branch: str, tip: str | None, actor: str
) -> None:
    """A branch moved (push or merge): update the PRs that use it as source or target."""
    prs = session.execute(
        select(PullRequest).where(
            PullRequest.repo_id == repo.id,
            PullRequest.state == "open",
            (PullRequest.source_branch == branch) | (PullRequest.target_branch == branch),
        )
    ).scalars()
    for pr in prs:
        if pr.target_branch == branch and tip is not None:
            pr.base_sha = tip
        if pr.source_branch != branch:
            continue
        if tip is None:
            pr.state = "closed"
            pr.closed_at = utcnow()
            session.flush()
            write_protection_file(settings, repo, session)
            record(
                session,
                actor=actor,
                action="pull_request.closed",
                target=f"{repo.name}#{pr.number}",
                payload=pr_payload(repo, pr, reason="source branch deleted"),
            )
            continue
        if tip == pr.head_sha:
            continue
        before = pr.head_sha
        pr.head_sha = tip
        dismissed = []
        for review in pr.reviews:
            if review.state == "approved" and not review.dismissed and review.head_sha != tip:
                review.dismissed = True
                review.dismissed_reason = f"new commits pushed ({tip[:12]})"
                dismissed.append(review.reviewer)
        record(
            session,
            actor=actor,
            action="pull_request.synchronize",
            target=f"{repo.name}#{pr.number}",
            payload=pr_payload(repo, pr, before=before, dismissed_approvals=dismissed),
        )
