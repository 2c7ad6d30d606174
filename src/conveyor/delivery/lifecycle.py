"""Registration of delivery's outbox consumer, its service user and its engine."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.core import Database, Kind, Settings, register_consumer
from conveyor.core.identities import ensure_identity
from conveyor.core.models import Event
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
            ensure_identity(s, SERVICE_USER, Kind.SERVICE)
    except IntegrityError:
        pass  # another server created it at the same moment


def engine(db: Database, settings: Settings) -> PromotionEngine:
    ensure_service_user(db)
    return PromotionEngine(db, settings)
