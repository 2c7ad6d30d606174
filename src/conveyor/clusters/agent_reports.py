"""Agents report their own status to the server (issue 14: the clusters page showed inventory and
events only where ``CONVEYOR_AGENT_STATUS_URLS`` named each agent's /status URL, which even the demo
did not set). One row per cluster, overwritten; only that cluster's agent identity may write it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from conveyor.clusters.models import AgentReport
from conveyor.clusters.registration import get_registration
from conveyor.core import Forbidden, InvalidInput, Kind, Principal, Unauthorized, agent_name, utcnow

MAX_SYNCS, MAX_EVENTS = 200, 100


def store(session: Session, principal: Principal, name: str, document: dict[str, Any]) -> None:
    if principal.anonymous:
        raise Unauthorized("an agent reports with its cluster's agent token", rule="auth.token-required")
    row = get_registration(session, name)
    scope = principal.scope
    if principal.kind != Kind.AGENT or scope is None or scope.cluster != row.name:
        raise Forbidden(f"only the agent identity of cluster '{row.name}' ({agent_name(row.name)}) may report "
                        f"its status, not '{principal.name}'", rule="cluster.agent-only")
    syncs, events = document.get("syncs"), document.get("events", [])
    if not isinstance(syncs, list) or not isinstance(events, list) \
            or not all(isinstance(x, dict) for x in [*syncs, *events]):
        raise InvalidInput("an agent status has 'syncs' (and 'events'): lists of objects", rule="cluster.agent-status")
    doc = {"syncs": [_sync(x) for x in syncs[:MAX_SYNCS]], "events": [_event(x) for x in events[-MAX_EVENTS:]]}
    report = session.get(AgentReport, row.name)
    if report is None:
        session.add(AgentReport(cluster=row.name, document=doc, reported_at=utcnow()))
    else:
        report.document, report.reported_at = doc, utcnow()


def last_report(session: Session, name: str) -> tuple[dict[str, Any], datetime] | None:
    report = session.get(AgentReport, name)
    return (report.document, report.reported_at) if report is not None else None


SYNC_TEXT = ("name", "state", "reason", "message", "last_applied_revision", "last_attempted_revision", "last_error")
SYNC_LISTS = ("inventory", "drifted")
SYNC_TIMES = ("last_transition_at", "last_reconcile_at", "last_success_at")


def _text(value: Any, limit: int = 2000) -> str:
    return str(value)[:limit]


def _time(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _sync(raw: dict[str, Any]) -> dict[str, Any]:
    """Only the fields the dashboard shows, as the types it expects (the document comes over HTTP)."""
    out: dict[str, Any] = {k: _text(raw[k]) for k in SYNC_TEXT if raw.get(k) is not None}
    for k in SYNC_LISTS:
        items = raw.get(k)
        out[k] = [_text(x, 600) for x in items[:5000]] if isinstance(items, list) else []
    for k in SYNC_TIMES:
        out[k] = _time(raw.get(k))
    return out


def _event(raw: dict[str, Any]) -> dict[str, Any]:
    return {"at": _time(raw.get("at")), "sync": _text(raw.get("sync", ""), 200),
            "reason": _text(raw.get("reason", ""), 200), "message": _text(raw.get("message", ""))}
