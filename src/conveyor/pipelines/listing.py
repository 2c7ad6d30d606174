"""Read-only queries over runs for other components (the dashboard), so they need not import the
pipelines' tables."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.pipelines.models import FINISHED, Run

__all__ = ["FINISHED", "Run", "get_run", "list_runs"]


def list_runs(session: Session, *, repo: str = "", repo_id: int | None = None, state: str = "",
              pipeline: str = "", limit: int = 100) -> list[Run]:
    """The newest runs first, optionally of one repository (by name or id), state and pipeline."""
    q = select(Run).order_by(Run.id.desc()).limit(limit)
    if repo:
        q = q.where(Run.repo_name == repo)
    if repo_id is not None:
        q = q.where(Run.repo_id == repo_id)
    if state:
        q = q.where(Run.state == state)
    if pipeline:
        q = q.where(Run.pipeline == pipeline)
    return list(session.execute(q).scalars())


def get_run(session: Session, run_id: int) -> Run | None:
    return session.get(Run, run_id)
