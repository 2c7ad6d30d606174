"""The audit log and the transactional event outbox.

``record`` writes the audit entry, the event and one queue entry per subscribed consumer
(``core/subscriptions.py``, the one static table) in the caller's transaction, so a state change
and its event commit or vanish together. ``OutboxWorker`` drains the queues of the consumers whose
handlers this process bound (``bind``): each entry is leased, then handled in its own transaction
together with its completion mark (at-least-once delivery).

A handler that raises a ``ConveyorError`` (a refusal: bad input, a missing object) failed for good:
retrying cannot help, so the delivery ends at once, marked failed, and its consumer's ``give_up``
makes the failure visible where the user looks (e.g. a failed check on the PR). Anything else
(a lost database connection, a timeout) is transient and retried with the one backoff policy of
``core/leasing.py``, up to ``MAX_ATTEMPTS``, after which it ends failed the same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core.background import BackgroundLoop
from conveyor.core.db import Database, after_commit, utcnow
from conveyor.core.errors import ConveyorError
from conveyor.core.leasing import claim_next, retry_delay
from conveyor.core.models import AuditEntry, Event, EventDelivery
from conveyor.core.subscriptions import Subscription

log = logging.getLogger(__name__)

Handler = Callable[[Session, Event], None]
GiveUp = Callable[[Session, Event, str], None]
MAX_ATTEMPTS = 12


@dataclass(frozen=True)
class Binding:
    handler: Handler
    give_up: GiveUp | None = None


_handlers: dict[str, Binding] = {}
_wakeup = threading.Event()


def bind(consumer: str, handler: Handler, give_up: GiveUp | None = None) -> None:
    """This process handles ``consumer``'s deliveries (it must be in ``SUBSCRIPTIONS``)."""
    if not any(s.consumer == consumer for s in subscriptions()):
        raise KeyError(f"'{consumer}' is not in core/subscriptions.py: declare it there first")
    _handlers[consumer] = Binding(handler, give_up)


def bound() -> dict[str, Binding]:
    return dict(_handlers)


def subscriptions() -> tuple[Subscription, ...]:
    from conveyor.core import subscriptions as table

    return table.SUBSCRIPTIONS


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
    for sub in subscriptions():
        if sub.wants(action):
            session.add(EventDelivery(event_id=ev.id, consumer=sub.consumer))
    after_commit(session, wake)
    return ev


def wake() -> None:
    _wakeup.set()


LEASE = timedelta(seconds=60)


class OutboxWorker(BackgroundLoop):
    name = "outbox"

    def __init__(self, db: Database, poll_interval: float = 0.5) -> None:
        super().__init__(poll_interval, _wakeup)
        self.db = db

    def _claim(self) -> int | None:
        with self.db.session() as s:
            d = claim_next(s, self.db, select(EventDelivery).where(
                EventDelivery.done.is_(False), EventDelivery.available_at <= utcnow(),
                EventDelivery.consumer.in_(list(_handlers))).order_by(EventDelivery.id))
            if d is None:
                return None
            d.available_at, d.attempts = utcnow() + LEASE, d.attempts + 1
            return int(d.id)

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
                _handlers[d.consumer].handler(s, d.event)
                d.done = True
                d.last_error = None
        except ConveyorError as exc:
            self._failed(did, f"{type(exc).__name__}: {exc.detail}" + (f" [{exc.rule}]" if exc.rule else ""), True)
        except Exception as exc:
            log.warning("event delivery %s failed: %s", did, exc)
            self._failed(did, f"{type(exc).__name__}: {exc}", False)
        return True

    def _failed(self, did: int, error: str, permanent: bool) -> None:
        with self.db.session() as s:
            d = s.get(EventDelivery, did)
            if d is None:
                return
            d.last_error = error[:4000]
            if not permanent and d.attempts < MAX_ATTEMPTS:
                d.available_at = utcnow() + retry_delay(d.attempts)
                return
            d.done, d.failed = True, True
            log.error("event delivery %s (%s of %s) gave up: %s", did, d.consumer, d.event.topic, error)
            s.add(AuditEntry(actor="system", action="outbox.gave_up", target=f"{d.consumer}:{d.event_id}",
                             detail={"consumer": d.consumer, "topic": d.event.topic, "error": error[:1000],
                                     "attempts": d.attempts}))
            binding = _handlers.get(d.consumer)
        if binding is not None and binding.give_up is not None:
            with self.db.session() as s:
                d = s.get(EventDelivery, did)
                if d is not None:
                    binding.give_up(s, d.event, error)

    def drain(self, limit: int = 10_000) -> int:
        """Process everything currently due (used by tests and one-shot commands)."""
        n = 0
        while n < limit and self.run_once():
            n += 1
        return n
