"""Repository rows and the small database helpers the registry shares (portable upserts, retries)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_incrementing

from conveyor.core import Database, utcnow
from conveyor.registry.models import RegistryRepository

T = TypeVar("T")


def insert_for(session: Session, table: Any) -> Any:
    """An INSERT that supports ON CONFLICT on both SQLite and PostgreSQL."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


@contextmanager
def write_session(db: Database) -> Iterator[Session]:
    """A unit of work that writes. On SQLite every writer of this server queues on core's
    in-process writer lock (``core/db.py``) rather than in SQLite's sleeping busy handler."""
    with db.session() as s:
        yield s


def in_transaction(db: Database, fn: Callable[[Session], T], attempts: int = 4) -> T:
    """Run ``fn`` in its own unit of work, retrying when a concurrent writer won a unique race
    (10 ms, 20 ms, 30 ms apart; the last attempt's error is raised)."""

    def once() -> T:
        with write_session(db) as s:
            return fn(s)

    retrying = Retrying(retry=retry_if_exception_type((IntegrityError, OperationalError)),
                        stop=stop_after_attempt(attempts), wait=wait_incrementing(start=0.01, increment=0.01),
                        reraise=True)
    return retrying(once)


def find_repo(session: Session, name: str) -> RegistryRepository | None:
    return session.execute(select(RegistryRepository).where(RegistryRepository.name == name)).scalar_one_or_none()


def ensure_repo(session: Session, name: str, user: str) -> int:
    table = RegistryRepository.__table__
    found = session.execute(select(table.c.id).where(table.c.name == name)).scalar()
    if found is not None:
        return int(found)
    stmt = insert_for(session, table).values(name=name, created_by=user, created_at=utcnow())
    session.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
    return int(session.execute(select(table.c.id).where(table.c.name == name)).scalar_one())


def lock_digest(session: Session, digest: str) -> None:
    """Serialise publication and collection of one blob across transactions.

    SQLite already runs write transactions one at a time (BEGIN IMMEDIATE); PostgreSQL gets a
    transaction-scoped advisory lock keyed by the digest.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    key = int(digest.partition(":")[2][:15] or "0", 16)
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
