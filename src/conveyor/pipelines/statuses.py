"""Commit statuses ``conveyor/pr`` and ``conveyor/ci`` that follow each run's state.

The handler reads the run's current state rather than the event's, so late or repeated
deliveries never move a status backwards, and only the newest run of a commit reports.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import Event, NotFound, Settings
from conveyor.forge import combined_status, get_repo, post_status
from conveyor.pipelines.config import run_url
from conveyor.pipelines.identity import SERVICE_PRINCIPAL
from conveyor.pipelines.models import Run


def context_of(run: Run) -> str:
    return f"conveyor/{run.pipeline}"


def describe(run: Run) -> tuple[str, str]:
    """(status state, description) for a run; a rebuild for a base image's new digest says so."""
    state, text = _describe(run)
    if run.security_update:
        text = f"security update ({run.security_update.get('base')}): {text}"
    return state, text


def _describe(run: Run) -> tuple[str, str]:
    if run.state == "queued":
        return "pending", f"run #{run.number} queued"
    if run.state == "running":
        return "pending", f"run #{run.number} running"
    if run.state == "success":
        secs = (run.finished_at - run.started_at).total_seconds() if run.finished_at and run.started_at else 0
        return "success", f"run #{run.number} passed in {secs:.0f}s"
    if run.state == "cancelled":
        return "error", f"run #{run.number} cancelled" + (f": {run.message}" if run.message else "")
    where = f" at step '{run.failed_step}'" if run.failed_step else ""
    state = "failure" if run.state == "failure" else "error"
    return state, f"run #{run.number} failed{where}: {run.message}"


def make_handler(settings: Settings):  # type: ignore[no-untyped-def]
    def handle(session: Session, event: Event) -> None:
        run_id = event.payload.get("run_id")
        run = session.get(Run, run_id) if isinstance(run_id, int) else None
        if run is None:
            return
        newest = session.execute(
            select(Run.id).where(Run.repo_id == run.repo_id, Run.sha == run.sha, Run.pipeline == run.pipeline)
            .order_by(Run.id.desc()).limit(1)
        ).scalar_one()
        if newest != run.id:
            return
        try:
            repo = get_repo(session, run.repo_name)
        except NotFound:
            return
        state, description = describe(run)
        description = description[:1000]
        current = combined_status(session, repo, run.sha).by_context().get(context_of(run))
        if current is not None and current.state == state and current.description == description:
            return
        post_status(session, settings, SERVICE_PRINCIPAL, repo, run.sha, state=state, context=context_of(run),
                    description=description, target_url=run_url(settings, run.id))

    return handle
