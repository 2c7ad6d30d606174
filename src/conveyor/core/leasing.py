"""The one leased-queue mechanism: claim the next due row without waiting on other claimers, and
the one backoff policy for retries.

Three queues use it — the event outbox, webhook deliveries and the pipeline run queue. A claim is
``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so servers sharing the database take different
rows; on SQLite ``BEGIN IMMEDIATE`` already serialises writers. The caller marks the claimed row
leased (a time until which nobody else takes it) in the same transaction.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from conveyor.core.db import Database

MAX_DELAY = 300.0
Row = TypeVar("Row")


def skip_locked(db: Database, query: Select[Row]) -> Select[Row]:
    """``query`` taking only rows no other transaction holds (PostgreSQL; SQLite serialises writers)."""
    return query.with_for_update(skip_locked=True) if db.is_postgres else query


def claim_next(session: Session, db: Database, query: Select[Any]) -> Any:
    """The first row of ``query`` nobody else holds (the caller leases it before committing)."""
    return session.execute(skip_locked(db, query.limit(1))).scalar_one_or_none()


def retry_delay(attempts: int) -> timedelta:
    """2, 4, 8 ... seconds after each failed attempt, up to five minutes, with 10 % jitter so that
    deliveries that failed together do not all come back at the same instant."""
    base = min(MAX_DELAY, 2.0 ** max(1, min(attempts, 9)))
    return timedelta(seconds=base * random.uniform(0.9, 1.1))
