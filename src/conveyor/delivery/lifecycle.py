"""Registration of delivery's outbox consumers, its service user and its engine."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.core import Database, Event, Kind, Settings, bind
from conveyor.core.identities import ensure_identity
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

    bind("delivery.ci", ci_succeeded)
    bind("delivery.gitops-checks", pull_request)
    bind("delivery.gitops-protection", push)


def ensure_service_user(db: Database) -> None:
    """A real user, so GitOps PRs, merges and statuses show who did them in the audit log."""
    try:
        with db.session() as s:
            ensure_identity(s, SERVICE_USER, Kind.SERVICE)
    except IntegrityError:
        pass  # another server created it at the same moment


def engine(db: Database, settings: Settings) -> PromotionEngine:
    ensure_service_user(db)
    return PromotionEngine(db, real_ports(db, settings))
