"""Promotion records: state changes with their timeline, in one place."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from conveyor.core import record, utcnow
from conveyor.delivery.models import Promotion, PromotionEvent
from conveyor.delivery.states import TERMINAL_STATES, PromotionState

SERVICE_USER = "conveyor-delivery"


def note(session: Session, p: Promotion, kind: str, message: str = "", **detail: Any) -> None:
    p.events.append(PromotionEvent(kind=kind, message=message, detail=detail))
    record(
        session,
        actor=SERVICE_USER,
        action=f"promotion.{kind}",
        target=f"{p.app}@{p.version}->{p.env}",
        payload={"promotion": p.id, "app": p.app, "version": p.version, "env": p.env, "state": str(p.state),
                 "message": message, **detail},
    )


def mark_failed(p: Promotion, reason: str, at: datetime | None = None) -> None:
    """The change failed in its environment (DORA's failure time), whatever state it moves to next."""
    p.failed_at = p.failed_at or at or utcnow()
    p.failure_reason = reason


def move(session: Session, p: Promotion, state: PromotionState, kind: str, message: str = "",
         at: datetime | None = None, **detail: Any) -> None:
    now = at or utcnow()
    p.state = state
    p.state_since = now
    if state == PromotionState.FAILED or kind == "failed":
        mark_failed(p, message, now)
    if state in TERMINAL_STATES:
        p.finished_at = now
    note(session, p, kind, message, **detail)
