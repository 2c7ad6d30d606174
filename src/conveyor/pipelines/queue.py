"""The run queue in the database: enqueue, claim with a lease, renew, and recover lapsed leases.

Claiming uses ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers in several processes
or on several machines take different runs without waiting on each other; SQLite serialises
writers (BEGIN IMMEDIATE), which gives the same exclusivity on one machine. A claimed run carries
``lease_owner`` and ``lease_expires_at``; the owner renews the lease while it works, and a run
whose lease lapsed is re-queued or failed by whoever notices first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from conveyor.core import Conflict, Database, after_commit, record, utcnow
from conveyor.pipelines.models import ACTIVE, Run

_wakeup = threading.Event()


def wake() -> None:
    _wakeup.set()


def wait_for_work(timeout: float) -> None:
    _wakeup.wait(timeout)
    _wakeup.clear()


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_payload(run: Run, **extra: object) -> dict[str, object]:
    return {
        "run_id": run.id, "repo": run.repo_name, "number": run.number, "pipeline": run.pipeline, "sha": run.sha,
        "ref": run.ref, "pr_number": run.pr_number, "state": run.state, "attempt": run.attempt,
        "trigger": run.trigger, "created_by": run.created_by, **extra,
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
) -> Run | None:
    """Queue a run; returns None when ``trigger_key`` was queued already (redelivered event)."""
    if trigger_key is not None:
        existing = session.execute(select(Run.id).where(Run.trigger_key == trigger_key)).scalar_one_or_none()
        if existing is not None:
            return None
    number = (session.execute(select(func.max(Run.number)).where(Run.repo_id == repo_id)).scalar_one() or 0) + 1
    run = Run(repo_id=repo_id, repo_name=repo_name, number=number, pipeline=pipeline, sha=sha, ref=ref,
              pr_number=pr_number, trigger=trigger, trigger_key=trigger_key, retry_of=retry_of, created_by=actor,
              state="queued", queued_at=utcnow(), outputs={})
    session.add(run)
    session.flush()
    record(session, actor=actor, action="pipeline.run.queued", target=f"{repo_name}#run-{run.number}",
           payload=run_payload(run))
    after_commit(session, wake)
    return run


@dataclass(frozen=True)
class Claim:
    run_id: int
    attempt: int


def claim(db: Database, owner: str, lease: timedelta) -> Claim | None:
    """Take the oldest queued run, if any, and lease it to ``owner``."""
    with db.session() as s:
        q = select(Run).where(Run.state == "queued").order_by(Run.queued_at, Run.id).limit(1)
        if db.is_postgres:
            q = q.with_for_update(skip_locked=True)
        run = s.execute(q).scalar_one_or_none()
        if run is None:
            return None
        now = utcnow()
        run.state = "running"
        run.attempt += 1
        run.lease_owner = owner
        run.lease_expires_at = now + lease
        run.started_at = now
        record(s, actor="conveyor-pipelines", action="pipeline.run.started",
               target=f"{run.repo_name}#run-{run.number}", payload=run_payload(run, worker=owner))
        return Claim(run.id, run.attempt)


def renew(db: Database, owner: str, run_ids: list[int], lease: timedelta) -> set[int]:
    """Extend the leases this owner holds; returns the runs whose cancellation was requested.

    A run whose lease was taken over (it lapsed and was recovered elsewhere) is not renewed and is
    reported as cancelled, so the worker stops executing it.
    """
    if not run_ids:
        return set()
    with db.session() as s:
        s.execute(
            update(Run)
            .where(Run.id.in_(run_ids), Run.lease_owner == owner, Run.state == "running")
            .values(lease_expires_at=utcnow() + lease)
        )
        rows = s.execute(select(Run.id, Run.cancel_requested, Run.lease_owner, Run.state)
                         .where(Run.id.in_(run_ids))).all()
    return {rid for rid, cancel, lease_owner, state in rows if cancel or lease_owner != owner or state != "running"}


def cancelled(db: Database, run_ids: list[int]) -> set[int]:
    """The runs among ``run_ids`` whose cancellation was requested."""
    with db.session() as s:
        return set(s.execute(select(Run.id).where(Run.id.in_(run_ids), Run.cancel_requested.is_(True))).scalars())


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


def _interrupt(session: Session, run: Run, max_attempts: int, why: str) -> None:
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


def _kill_leftovers(run: Run) -> None:
    """End the process group of a step whose worker on this host died (its steps run in their own
    session, so they outlive it)."""
    for step in run.steps:
        if step.state == "running" and step.pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(step.pgid, signal.SIGKILL)


def recover(db: Database, max_attempts: int, is_dead: Callable[[str], bool] | None = None) -> int:
    """Re-queue or fail runs whose worker is gone: lease lapsed, or (``is_dead``) known dead now.

    Returns how many runs were recovered.
    """
    n = 0
    with db.session() as s:
        q = select(Run).where(Run.state == "running")
        if db.is_postgres:
            q = q.with_for_update(skip_locked=True)
        now = utcnow()
        for run in s.execute(q).scalars().all():
            lapsed = run.lease_expires_at is None or run.lease_expires_at < now
            dead = is_dead is not None and run.lease_owner is not None and is_dead(run.lease_owner)
            if dead:
                _kill_leftovers(run)
            if lapsed or dead:
                why = "was interrupted: its worker stopped (server crash or restart)"
                _interrupt(s, run, max_attempts, why)
                n += 1
    return n


def dead_on_this_host(owner: str) -> bool:
    """True for a lease owner that was a process on this machine and no longer runs."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # After pid reuse a live process with that pid may be another program: ours is gone then.
    cmdline = Path(f"/proc/{pid}/cmdline")
    return not cmdline.exists() or b"conveyor" not in cmdline.read_bytes()
