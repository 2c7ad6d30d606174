"""The audit log and the transactional event outbox.

``record`` writes the audit entry, the event and one queue entry per interested consumer in
the caller's transaction, so a state change and its event commit or vanish together.
``OutboxWorker`` drains the queues in a background thread: each entry is leased, then handled
in its own transaction together with its completion mark (at-least-once delivery).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from conveyor.core.background import BackgroundLoop
from conveyor.core.db import Database, after_commit, utcnow
from conveyor.core.models import AuditEntry, Event, EventDelivery

log = logging.getLogger(__name__)

Handler = Callable[[Session, Event], None]


@dataclass(frozen=True)
class Consumer:
    name: str
    topics: tuple[str, ...]  # exact topics or prefixes ending in "."; "*" for all
    handler: Handler

    def wants(self, topic: str) -> bool:
        return any(t == "*" or t == topic or (t.endswith(".") and topic.startswith(t)) for t in self.topics)


_consumers: dict[str, Consumer] = {}
_wakeup = threading.Event()


def register_consumer(name: str, topics: tuple[str, ...], handler: Handler) -> None:
    _consumers[name] = Consumer(name, topics, handler)


def consumers() -> dict[str, Consumer]:
    return dict(_consumers)


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str,
    payload: dict[str, Any] | None = None,
) -> Event:
    """Audit and publish one change of state, inside the caller's transaction."""
    payload = dict(payload or {})
    session.add(AuditEntry(actor=actor, action=action, target=target, detail=payload))
    ev = Event(topic=action, actor=actor, payload={"target": target, **payload})
    session.add(ev)
    session.flush()
    for c in _consumers.values():
        if c.wants(action):
            session.add(EventDelivery(event_id=ev.id, consumer=c.name))
    after_commit(session, wake)
    return ev


def wake() -> None:
    _wakeup.set()


LEASE = timedelta(seconds=60)


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(300, 2 ** min(attempts, 8)))


class OutboxWorker(BackgroundLoop):
    name = "outbox"

    def __init__(self, db: Database, poll_interval: float = 0.5) -> None:
        super().__init__(poll_interval, _wakeup)
        self.db = db

    def _claim(self) -> int | None:
        with self.db.session() as s:
            q = (
                select(EventDelivery.id)
                .where(
                    EventDelivery.done.is_(False),
                    EventDelivery.available_at <= utcnow(),
                    EventDelivery.consumer.in_(list(_consumers)),
                )
                .order_by(EventDelivery.id)
                .limit(1)
            )
            if self.db.is_postgres:
                q = q.with_for_update(skip_locked=True)
            did = s.execute(q).scalar_one_or_none()
            if did is None:
                return None
            s.execute(
                update(EventDelivery)
                .where(EventDelivery.id == did)
                .values(available_at=utcnow() + LEASE, attempts=EventDelivery.attempts + 1)
            )
            return did

    def run_once(self) -> bool:
        """Handle one pending delivery; returns False when there was nothing to do."""
        did = self._claim()
        if did is None:
            return False
        try:
            with self.db.session() as s:
                d = s.get(EventDelivery, did)
                if d is None or d.done:
                    return True
                _consumers[d.consumer].handler(s, d.event)
                d.done = True
                d.last_error = None
        except Exception as exc:
            log.warning("event delivery %s failed: %s", did, exc)
            with self.db.session() as s:
                d = s.get(EventDelivery, did)
                if d is not None:
                    d.available_at = utcnow() + _backoff(d.attempts)
                    d.last_error = f"{type(exc).__name__}: {exc}"
        return True

    def drain(self, limit: int = 10_000) -> int:
        """Process everything currently due (used by tests and one-shot commands)."""
        n = 0
        while n < limit and self.run_once():
            n += 1
        return n
