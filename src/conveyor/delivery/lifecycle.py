"""Registration of delivery's outbox consumer, its service user and its engine."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.core import Database, Role, Settings, register_consumer
from conveyor.core.auth import create_user
from conveyor.core.models import Event, User
from conveyor.delivery import gitops_checks
from conveyor.delivery.engine import PromotionEngine
from conveyor.delivery.records import SERVICE_USER
from conveyor.delivery.start import on_ci_succeeded


def register(settings: Settings) -> None:
    def handler(session: Session, event: Event) -> None:
        on_ci_succeeded(session, settings, event)

    register_consumer("delivery.ci", ("pipeline.ci.succeeded",), handler)

    def pull_request(session: Session, event: Event) -> None:
        gitops_checks.on_pull_request(session, settings, event)

    def push(session: Session, event: Event) -> None:
        gitops_checks.on_push(session, settings, event)

    register_consumer("delivery.gitops-checks", ("pull_request.opened", "pull_request.synchronize"), pull_request)
    register_consumer("delivery.gitops-protection", ("push",), push)


def ensure_service_user(db: Database) -> None:
    """A real user, so GitOps PRs, merges and statuses show who did them in the audit log."""
    try:
        with db.session() as s:
            if s.execute(select(User).where(User.name == SERVICE_USER)).scalar_one_or_none() is None:
                create_user(s, SERVICE_USER, Role.DEVELOPER.value)
    except IntegrityError:
        pass  # another server created it at the same moment


def engine(db: Database, settings: Settings) -> PromotionEngine:
    ensure_service_user(db)
    return PromotionEngine(db, settings)
