"""Promotion records: state changes with their timeline, in one place."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from conveyor.core import record, utcnow
from conveyor.delivery.models import TERMINAL_STATES, Promotion, PromotionEvent

SERVICE_USER = "conveyor-delivery"


def note(session: Session, p: Promotion, kind: str, message: str = "", **detail: Any) -> None:
    p.events.append(PromotionEvent(kind=kind, message=message, detail=detail))
    record(
        session,
        actor=SERVICE_USER,
        action=f"promotion.{kind}",
        target=f"{p.app}@{p.version}->{p.env}",
        payload={"promotion": p.id, "app": p.app, "version": p.version, "env": p.env, "state": p.state,
                 "message": message, **detail},
    )


def move(session: Session, p: Promotion, state: str, kind: str, message: str = "", **detail: Any) -> None:
    now = utcnow()
    p.state = state
    p.state_since = now
    if state == "failed" or kind == "failed":
        p.failed_at = p.failed_at or now
        p.failure_reason = message
    if state in TERMINAL_STATES:
        p.finished_at = now
    note(session, p, kind, message, **detail)
