"""Read-only queries over runs for other components (the dashboard), so they need not import the
pipelines' tables."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.pipelines.models import FINISHED, Run

__all__ = ["FINISHED", "Run", "get_run", "list_runs"]


def list_runs(session: Session, *, repo: str = "", state: str = "", limit: int = 100) -> list[Run]:
    """The newest runs first, optionally of one repository and in one state."""
    q = select(Run).order_by(Run.id.desc()).limit(limit)
    if repo:
        q = q.where(Run.repo_name == repo)
    if state:
        q = q.where(Run.state == state)
    return list(session.execute(q).scalars())


def get_run(session: Session, run_id: int) -> Run | None:
    return session.get(Run, run_id)
