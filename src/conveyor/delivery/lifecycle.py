"""Registration of delivery's outbox consumers, its service user and its engine."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.core import Database, NotFound, Role, Settings, register_consumer
from conveyor.core.auth import create_user, get_user
from conveyor.core.models import Event
from conveyor.delivery import gitops_checks
from conveyor.delivery.adapters import real_ports
from conveyor.delivery.engine import PromotionEngine
from conveyor.delivery.records import SERVICE_USER
from conveyor.delivery.start import on_ci_succeeded


def register(settings: Settings) -> None:
    def ci_succeeded(session: Session, event: Event) -> None:
        on_ci_succeeded(session, settings, event.payload, event.actor)

    def pull_request(session: Session, event: Event) -> None:
        gitops_checks.on_pull_request(session, settings, event.payload)

    def push(session: Session, event: Event) -> None:
        gitops_checks.on_push(session, settings, event.payload)

    register_consumer("delivery.ci", ("pipeline.ci.succeeded",), ci_succeeded)
    register_consumer("delivery.gitops-checks", ("pull_request.opened", "pull_request.synchronize"), pull_request)
    register_consumer("delivery.gitops-protection", ("push",), push)


def ensure_service_user(db: Database) -> None:
    """A real user, so GitOps PRs, merges and statuses show who did them in the audit log."""
    try:
        with db.session() as s:
            try:
                get_user(s, SERVICE_USER)
            except NotFound:
                create_user(s, SERVICE_USER, Role.DEVELOPER.value)
    except IntegrityError:
        pass  # another server created it at the same moment


def engine(db: Database, settings: Settings) -> PromotionEngine:
    ensure_service_user(db)
    return PromotionEngine(db, real_ports(db, settings))
