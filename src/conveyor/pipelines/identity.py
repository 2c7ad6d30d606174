"""The pipelines' own identity: a service user that owns the ``conveyor/pr`` and ``conveyor/ci``
checks, and the short-lived run tokens that are the only credential a run's steps ever see.

A run token is issued when a run is claimed and revoked when it ends (or at its deadline, should
the worker die): it reads the run's repository at the run's commit, pulls images, pushes images
only under the app's registry repository and only for a CI run of the protected default branch,
uploads the run's artifacts and posts the run's own context (never ``success``). The service
identity itself has no token at all: it acts only inside the server's process.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from conveyor.core import Database, Kind, Principal, Role, Scope, utcnow
from conveyor.core.auth import service_principal
from conveyor.core.identities import ensure_identity, issue_token, revoke_scoped

SERVICE_USER = "conveyor-pipelines"
SERVICE_PRINCIPAL: Principal = service_principal(SERVICE_USER, Role.DEVELOPER)
# A safety net only: run tokens are revoked when their run ends.
RUN_TOKEN_TTL = timedelta(hours=6)


def ensure_service_user(db: Database) -> None:
    with db.session() as s:
        ensure_identity(s, SERVICE_USER, Kind.SERVICE)


def run_scope(run_id: int, repo: str, commit: str, pipeline: str, push: tuple[str, ...]) -> Scope:
    return Scope(run_id=run_id, repos=(repo,), commit=commit, pipeline=pipeline, push=push)


def issue_run_token(session: Session, run_id: int, repo: str, commit: str, pipeline: str,
                    push: tuple[str, ...]) -> str:
    user = ensure_identity(session, SERVICE_USER, Kind.SERVICE)
    return issue_token(session, user, f"run {run_id} of {repo}", scope=run_scope(run_id, repo, commit, pipeline, push),
                       expires_at=utcnow() + RUN_TOKEN_TTL)


def revoke_run_tokens(session: Session, run_id: int) -> None:
    revoke_scoped(session, run_id=run_id)
