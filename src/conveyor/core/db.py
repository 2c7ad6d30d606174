"""Storage: one SQLAlchemy engine (SQLite in WAL mode by default, PostgreSQL for scale-out).

Each component declares its tables on the shared ``Base`` and ships its own Alembic
version directory (a branch of the migration graph labelled with the component's name),
so components own their schema while one ``upgrade heads`` migrates everything.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Components whose migrations are applied, in dependency order.
COMPONENTS_WITH_TABLES = ("core", "forge", "registry", "clusters", "pipelines", "delivery")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which drops tzinfo) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Run ``fn`` once the session's transaction has committed (never on rollback)."""
    callbacks: list[Callable[[], None]] = session.info.setdefault("after_commit", [])
    if fn not in callbacks:
        callbacks.append(fn)


def utcnow() -> datetime:
    return datetime.now(UTC)


WRITER_WAIT = 30.0
log = logging.getLogger("conveyor.db")
_HOLDS = "conveyor.holds_write_lock"


class _WriteTurn:
    """The in-process write turn, and who has it: when a writer waits in vain, the log says what the
    holder was doing (its thread's stack at that moment), which is what finding a stall needs; a turn
    held longer than ``LONG_HOLD`` is logged when it ends, with the stack that took it."""

    LONG_HOLD = 10.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holder: tuple[int, str, float, list[str]] | None = None  # thread id, name, since, where taken

    def acquire(self) -> None:
        if not self.lock.acquire(timeout=WRITER_WAIT):
            log.error("no write turn within %.0f s: %s", WRITER_WAIT, self.describe())
            raise sqlite3.OperationalError(f"database is locked: no write turn within {WRITER_WAIT:.0f} s")
        me = threading.current_thread()
        self.holder = (threading.get_ident(), me.name, time.monotonic(), _conveyor_frames(sys._getframe(2)))

    def release(self) -> None:
        holder, self.holder = self.holder, None
        self.lock.release()
        if holder and time.monotonic() - holder[2] > self.LONG_HOLD:
            log.warning("a write turn was held %.1f s by %s, taken at\n%s", time.monotonic() - holder[2],
                        holder[1], "".join(holder[3]))

    def describe(self) -> str:
        holder = self.holder
        if holder is None:
            return "the holder has just let go"
        ident, name, since, taken = holder
        frame = sys._current_frames().get(ident)
        now = "".join(_conveyor_frames(frame)) if frame is not None else "(thread gone)\n"
        return (f"{name} has held it {time.monotonic() - since:.1f} s; taken at\n{''.join(taken)}"
                f"and now at\n{now}")


def _conveyor_frames(frame: Any) -> list[str]:
    """The Conveyor frames of a stack, innermost last (library frames say little about who holds a turn)."""
    stack = traceback.format_stack(frame, limit=60) if frame is not None else []
    return [line for line in stack if "/conveyor/" in line and "site-packages" not in line
            and "/core/db.py" not in line][-12:]


def _serialize_writers(engine: Engine) -> None:
    """Every transaction takes SQLite's write lock at BEGIN (``BEGIN IMMEDIATE``), so that
    read-then-write transactions never deadlock. This server's own writers first queue on a
    Python lock: SQLite's busy handler makes a waiting writer sleep up to 100 ms between tries,
    and under contention some writers kept losing. Measured with 20 concurrent pushes
    (benchmarks/forge_concurrency.py): recording a push waited p95 18 s for the lock, max 24 s;
    a woken waiter takes the lock as soon as it is free instead. Other processes on the same
    file (``conveyor worker``) still meet SQLite's busy handler, as before."""
    turn = _WriteTurn()

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        turn.acquire()
        conn.info[_HOLDS] = True
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            conn.info.pop(_HOLDS, None)
            turn.release()
            raise

    def _end(conn: Any) -> None:
        # Fired just before the COMMIT/ROLLBACK itself; the next writer's BEGIN IMMEDIATE may
        # meet the lock for that instant, which SQLite's busy handler retries after 1 ms.
        if conn.info.pop(_HOLDS, False):
            turn.release()

    def _returned(_dbapi_conn: Any, record: Any) -> None:
        if record.info.pop(_HOLDS, False):  # a connection returned mid-transaction
            turn.release()

    event.listen(engine, "commit", _end)
    event.listen(engine, "rollback", _end)
    event.listen(engine, "checkin", _returned)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        _serialize_writers(engine)

        # pysqlite's own transaction handling must be off for the BEGIN above to be ours.
        @event.listens_for(engine, "connect")
        def _sqlite_no_autobegin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_reader(url: Any) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA query_only=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


class BlockingOnEventLoop(RuntimeError):
    """A session opened on the event loop's thread (rule ``db.off-event-loop``)."""


def _refuse_event_loop() -> None:
    """Sessions are for worker threads only. Every SQLite session waits for this process's write turn
    (above); a holder finishes its transaction in a worker the event loop schedules, so a coroutine that
    waits for a session on the loop's own thread blocks that holder and itself until ``WRITER_WAIT``.
    Seen in the browser test (about 1 run in 4): a runner's log upload held the turn, the page's live-log
    stream authenticated on the loop, and every request of the server stalled 30 s, then failed. Async
    routes hand their database work to ``anyio.to_thread`` / ``run_in_threadpool`` instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # a worker thread, or no event loop at all (CLI, background threads)
    raise BlockingOnEventLoop("a database session was opened on the event loop's thread; run it in a worker "
                              "thread (rule db.off-event-loop)")


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Lookups that must not queue for SQLite's write lock (which every ``session()`` takes
        # at BEGIN) read through a second, query-only engine: in WAL mode readers never wait for
        # the writer. Measured (benchmarks/forge_concurrency.py): git's per-request
        # authentication on write-lock sessions had p95 1.6 s and max 14 s with 20 clients.
        self.read_engine: Engine = self.engine
        self._readers: sessionmaker[Session] | None = None
        u = self.engine.url
        if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
            self.read_engine = _sqlite_reader(u)
            self._readers = sessionmaker(self.read_engine)

    @property
    def separate_reader(self) -> bool:
        """True on a SQLite file: ``reads()`` then never waits for the writer."""
        return self._readers is not None

    @contextmanager
    def reads(self) -> Iterator[Session]:
        """A session for lookups only: nothing it changes is kept (it is rolled back). On
        PostgreSQL an ordinary session (MVCC readers do not block); on SQLite a query-only one."""
        _refuse_event_loop()
        s = self._readers() if self._readers is not None else self.sessions()
        try:
            yield s
        finally:
            s.rollback()
            s.close()

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on any error."""
        _refuse_event_loop()
        s = self.sessions()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()
        for fn in s.info.pop("after_commit", []):
            fn()

    def migrate(self) -> None:
        import logging

        from alembic import command

        logging.getLogger("alembic").setLevel(logging.WARNING)

        command.upgrade(alembic_config(self.url), "heads")

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


def migration_locations() -> list[str]:
    root = resources.files("conveyor")
    return [str(Path(str(root)) / comp / "migrations") for comp in COMPONENTS_WITH_TABLES]


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "alembic"))
    cfg.set_main_option("version_locations", " ".join(migration_locations()))
    cfg.set_main_option("path_separator", "space")
    cfg.attributes["url"] = url
    return cfg
