"""Agents report their own status to the server (issue 14: the clusters page showed inventory and
events only where ``CONVEYOR_AGENT_STATUS_URLS`` named each agent's /status URL, which even the demo
did not set). One row per cluster, overwritten; only that cluster's agent identity may write it.

The document comes from a cluster, so it is not trusted: only the fields the dashboard shows are kept,
as the types it expects, texts cut to their length, health and sync states one of their enums (else
Unknown). Each sync's object tree (the agent's observe.py: objects with health, sync state, owner,
events and pod log lines) is held to the agent's own caps with a margin; a report beyond them is
refused whole, 413 with rule ``cluster.agent-status-size`` (a working agent never sends one, so it is
a broken or compromised one): more than ``MAX_OBJECTS`` objects in a sync, ``MAX_OBJECT_EVENTS``
events on one object, ``MAX_LOG_LINES`` log lines on one object, or ``MAX_LOG_BYTES`` of log text in
one sync. The whole body is at most 1 MiB already (core.limits), which bounds the stored row.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from conveyor.agent import HealthStatus, SyncState  # the agent's wire values: it sends these
from conveyor.clusters.models import AgentReport
from conveyor.clusters.registration import get_registration
from conveyor.core import ConveyorError, Forbidden, InvalidInput, Kind, Principal, Unauthorized, agent_name, utcnow

MAX_SYNCS, MAX_EVENTS = 200, 100
# the agent sends at most 300 objects, 5 events and 20 log lines per object, 16 KiB of log per sync
MAX_OBJECTS, MAX_OBJECT_EVENTS, MAX_LOG_LINES, MAX_LOG_BYTES = 300, 20, 50, 64 * 1024
OBJECT_TEXT = 300
SIZE_RULE = "cluster.agent-status-size"


class ReportTooLarge(ConveyorError):
    status = 413
    title = "Payload too large"


def store(session: Session, principal: Principal, name: str, document: dict[str, Any]) -> None:
    if principal.anonymous:
        raise Unauthorized("an agent reports with its cluster's agent token", rule="auth.token-required")
    row = get_registration(session, name)
    scope = principal.scope
    if principal.kind != Kind.AGENT or scope is None or scope.cluster != row.name:
        raise Forbidden(f"only the agent identity of cluster '{row.name}' ({agent_name(row.name)}) may report "
                        f"its status, not '{principal.name}'", rule="cluster.agent-only")
    doc = sanitise(document)
    report = session.get(AgentReport, row.name)
    if report is None:
        session.add(AgentReport(cluster=row.name, document=doc, reported_at=utcnow()))
    else:
        report.document, report.reported_at = doc, utcnow()


def sanitise(document: Any) -> dict[str, Any]:
    """The parts of an agent's status document the dashboard shows, checked and bounded (module docstring)."""
    syncs = document.get("syncs") if isinstance(document, dict) else None
    events = document.get("events", []) if isinstance(document, dict) else None
    if not isinstance(syncs, list) or not isinstance(events, list) \
            or not all(isinstance(x, dict) for x in [*syncs, *events]):
        raise InvalidInput("an agent status has 'syncs' (and 'events'): lists of objects", rule="cluster.agent-status")
    return {"syncs": [_sync(x) for x in syncs[:MAX_SYNCS]], "events": [_event(x) for x in events[-MAX_EVENTS:]]}


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
    out["objects"] = _objects(raw.get("objects"), str(out.get("name", "")))
    return out


def _enum(value: Any, kind: type[StrEnum], default: StrEnum | None) -> str | None:
    try:
        return str(kind(value))
    except ValueError:
        return str(default) if default is not None else None


def _objects(raw: Any, sync: str) -> list[dict[str, Any]]:
    """The object tree as a flat list; a parent must come before its children (else the object is a root)."""
    items = [x for x in raw if isinstance(x, dict)] if isinstance(raw, list) else []
    if len(items) > MAX_OBJECTS:
        raise ReportTooLarge(f"sync '{sync[:100]}' reports {len(items)} objects; at most {MAX_OBJECTS}",
                             rule=SIZE_RULE)
    seen: set[str] = set()
    out, log_bytes = [], 0
    for x in items:
        node = _object(x, sync, seen)
        log_bytes += sum(len(line.encode()) for line in node["logs"]["lines"]) if node["logs"] else 0
        if log_bytes > MAX_LOG_BYTES:
            raise ReportTooLarge(f"sync '{sync[:100]}' reports more than {MAX_LOG_BYTES} bytes of log lines",
                                 rule=SIZE_RULE)
        seen.add(node["id"])
        out.append(node)
    return out


def _object(raw: dict[str, Any], sync: str, seen: set[str]) -> dict[str, Any]:
    oid = _text(raw.get("id", ""), 600)
    events, logs = raw.get("events"), raw.get("logs")
    events = [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []
    lines = logs.get("lines") if isinstance(logs, dict) else None
    lines = lines if isinstance(lines, list) else []
    if len(events) > MAX_OBJECT_EVENTS or len(lines) > MAX_LOG_LINES:
        what = f"{len(events)} events" if len(events) > MAX_OBJECT_EVENTS else f"{len(lines)} log lines"
        raise ReportTooLarge(f"object '{oid[:200]}' of sync '{sync[:100]}' reports {what}; at most "
                             f"{MAX_OBJECT_EVENTS} events and {MAX_LOG_LINES} log lines", rule=SIZE_RULE)
    parent = raw.get("parent")
    return {
        "id": oid, "kind": _text(raw.get("kind", ""), 100), "namespace": _text(raw.get("namespace", ""), 100),
        "name": _text(raw.get("name", ""), 300),
        "parent": _text(parent, 600) if parent is not None and _text(parent, 600) in seen else None,
        "health": _enum(raw.get("health"), HealthStatus, HealthStatus.UNKNOWN),
        "message": _text(raw.get("message", ""), OBJECT_TEXT),
        "sync": _enum(raw.get("sync"), SyncState, None),
        "sync_message": _text(raw.get("sync_message", ""), OBJECT_TEXT),
        "events": [{"type": _text(e.get("type", ""), 20), "reason": _text(e.get("reason", ""), 100),
                    "message": _text(e.get("message", ""), OBJECT_TEXT),
                    "count": e["count"] if isinstance(e.get("count"), int) and not isinstance(e["count"], bool)
                    else 1, "at": _time(e.get("at"))} for e in events],
        "logs": {"container": _text(logs.get("container", ""), 100), "previous": logs.get("previous") is True,
                 "lines": [_text(line, OBJECT_TEXT) for line in lines]} if isinstance(logs, dict) else None,
    }


def _event(raw: dict[str, Any]) -> dict[str, Any]:
    return {"at": _time(raw.get("at")), "sync": _text(raw.get("sync", ""), 200),
            "reason": _text(raw.get("reason", ""), 200), "message": _text(raw.get("message", ""))}
