"""The run queue in the database: enqueue, claim with a lease, renew, and recover lapsed leases.

Runners claim over the HTTP API (``runner_api.py``); the queue itself is rows of ``pipeline_runs``.
Claiming uses ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so runners served by several
servers take different runs without waiting on each other; SQLite serialises writers (BEGIN
IMMEDIATE), which gives the same exclusivity on one machine. A claimed run carries ``lease_owner``
(``<runner>/<instance>``) and ``lease_expires_at``; every heartbeat of its runner renews the lease,
and a run whose lease lapsed is re-queued (or failed after its last attempt) by the server.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.core import Conflict, Database, after_commit, record, utcnow
from conveyor.core.leasing import skip_locked
from conveyor.pipelines.identity import SERVICE_USER, revoke_run_tokens
from conveyor.pipelines.models import ACTIVE, Run

# Runs queued in this process wake every runner waiting in a long-poll claim at once; runs queued
# by another server (PostgreSQL) are found by the waiters' next poll.
_queued = threading.Condition()
_generation = 0


def wake() -> None:
    global _generation
    with _queued:
        _generation += 1
        _queued.notify_all()


def generation() -> int:
    return _generation


def wait_for_work(seen: int, timeout: float) -> bool:
    """Wait until something was queued after generation ``seen``, or ``timeout`` passed."""
    with _queued:
        return _queued.wait_for(lambda: _generation != seen, timeout)


def run_payload(run: Run, **extra: object) -> dict[str, object]:
    return {
        "run_id": run.id, "repo": run.repo_name, "number": run.number, "pipeline": run.pipeline, "sha": run.sha,
        "ref": run.ref, "pr_number": run.pr_number, "state": run.state, "attempt": run.attempt,
        "trigger": run.trigger, "created_by": run.created_by, "deployable": run.deployable,
        "commits": list(run.commits or [run.sha]), "security_update": run.security_update, **extra,
    }


def enqueue(
    session: Session,
    *,
    repo_id: int,
    repo_name: str,
    pipeline: str,
    sha: str,
    ref: str,
    trigger: str,
    actor: str,
    pr_number: int | None = None,
    trigger_key: str | None = None,
    retry_of: int | None = None,
    deployable: bool = False,
    labels: tuple[str, ...] = (),
    commits: list[str] | None = None,
    security_update: dict[str, Any] | None = None,
) -> Run | None:
    """Queue a run; returns None when ``trigger_key`` was queued already (redelivered event)."""
    if trigger_key is not None:
        existing = session.execute(select(Run.id).where(Run.trigger_key == trigger_key)).scalar_one_or_none()
        if existing is not None:
            return None
    number = (session.execute(select(func.max(Run.number)).where(Run.repo_id == repo_id)).scalar_one() or 0) + 1
    run = Run(repo_id=repo_id, repo_name=repo_name, number=number, pipeline=pipeline, sha=sha, ref=ref,
              pr_number=pr_number, trigger=trigger, trigger_key=trigger_key, retry_of=retry_of, created_by=actor,
              state="queued", queued_at=utcnow(), outputs={}, deployable=deployable, labels=sorted(labels),
              commits=list(commits or [sha]), security_update=security_update)
    session.add(run)
    session.flush()
    record(session, actor=actor, action="pipeline.run.queued", target=f"{repo_name}#run-{run.number}",
           payload=run_payload(run))
    after_commit(session, wake)
    return run


@dataclass(frozen=True)
class RunnerView:
    """What a claiming runner offers: its name and instance, its labels and the repositories it may serve."""

    name: str
    instance: str
    labels: frozenset[str]
    repos: frozenset[str]  # empty: every repository

    @property
    def owner(self) -> str:
        return f"{self.name}/{self.instance}"

    def serves(self, run: Run) -> bool:
        return set(run.labels or ()) <= self.labels and (not self.repos or run.repo_name in self.repos)


def claim(db: Database, runner: RunnerView, lease: timedelta) -> int | None:
    """Take the oldest queued run this runner serves, if any, and lease it; returns its id."""
    with db.session() as s:
        q = skip_locked(db, select(Run).where(Run.state == "queued").order_by(Run.queued_at, Run.id).limit(50))
        run = next((r for r in s.execute(q).scalars() if runner.serves(r)), None)
        if run is None:
            return None
        now = utcnow()
        run.state, run.attempt, run.runner = "running", run.attempt + 1, runner.name
        run.lease_owner, run.lease_expires_at, run.started_at = runner.owner, now + lease, now
        record(s, actor=SERVICE_USER, action="pipeline.run.started", target=f"{run.repo_name}#run-{run.number}",
               payload=run_payload(run, runner=runner.owner))
        return run.id


def request_cancel(session: Session, run: Run, actor: str) -> None:
    if run.state not in ACTIVE:
        raise Conflict(f"run {run.id} has already finished ({run.state})", rule="run.finished")
    if run.state == "queued":
        run.state = "cancelled"
        run.finished_at = utcnow()
        run.message = f"cancelled by {actor} before it started"
        record(session, actor=actor, action="pipeline.run.finished", target=f"{run.repo_name}#run-{run.number}",
               payload=run_payload(run))
    else:
        run.cancel_requested = True
        record(session, actor=actor, action="pipeline.run.cancel_requested",
               target=f"{run.repo_name}#run-{run.number}", payload=run_payload(run))


def interrupt(session: Session, run: Run, max_attempts: int, why: str) -> None:
    """The run's runner stopped (shut down, crashed, lost its lease): re-queue it, or fail it visibly."""
    revoke_run_tokens(session, run.id)
    for step in run.steps:
        if step.state == "running":
            step.state, step.finished_at, step.message = "failure", utcnow(), why
    run.lease_owner = None
    run.lease_expires_at = None
    if run.cancel_requested:
        run.state, run.finished_at, run.message = "cancelled", utcnow(), f"cancelled; {why}"
    elif run.attempt < max_attempts:
        run.state, run.message = "queued", f"attempt {run.attempt} {why}; re-queued"
        run.queued_at = utcnow()
        run.started_at = None
        run.failed_step = None
        for step in list(run.steps):
            session.delete(step)
        record(session, actor="system", action="pipeline.run.requeued", target=f"{run.repo_name}#run-{run.number}",
               payload=run_payload(run, reason=why))
        after_commit(session, wake)
        return
    else:
        run.state, run.finished_at = "error", utcnow()
        run.failed_step = run.failed_step or next((s.name for s in run.steps if s.message == why), None)
        run.message = f"attempt {run.attempt} {why}; no attempts left"
    record(session, actor="system", action="pipeline.run.finished", target=f"{run.repo_name}#run-{run.number}",
           payload=run_payload(run, failed_step=run.failed_step, message=run.message))


def recover(db: Database, max_attempts: int, dead_owner: str | None = None, quiet_for: timedelta | None = None) -> int:
    """Re-queue or fail runs whose runner is gone: the lease lapsed or, for ``dead_owner`` (a runner
    starting again as ``<name>/<new instance>``), every run an earlier instance of that runner holds
    whose lease ends sooner than ``quiet_for`` from now — its instance stopped renewing it (a live one
    renews it every heartbeat, about once a second). Returns how many runs were recovered.
    """
    n = 0
    with db.session() as s:
        q = skip_locked(db, select(Run).where(Run.state == "running"))
        now = utcnow()
        for run in s.execute(q).scalars().all():
            lapsed = run.lease_expires_at is None or run.lease_expires_at < now
            restarted = (dead_owner is not None and run.runner == dead_owner.partition("/")[0]
                         and run.lease_owner != dead_owner and quiet_for is not None
                         and run.lease_expires_at is not None and run.lease_expires_at < now + quiet_for)
            if lapsed or restarted:
                interrupt(s, run, max_attempts, "was interrupted: its runner stopped (crash or restart)")
                n += 1
    return n
