"""SQLite under concurrency (core/db.py): readers never wait for a writer, writers take turns."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from conveyor.core.db import BlockingOnEventLoop, Database


def _db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    with db.session() as s:
        s.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)"))
        s.execute(text("INSERT INTO counter VALUES (1, 0)"))
    return db


def test_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    db = _db(tmp_path)
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with db.session() as s:
            s.execute(text("UPDATE counter SET n = n + 1"))
            holding.set()
            release.wait(30)

    w = threading.Thread(target=writer)
    w.start()
    assert holding.wait(10)
    seen: list[int] = []

    def reader() -> None:
        with db.reads() as r:
            seen.append(int(r.execute(text("SELECT n FROM counter")).scalar_one()))

    t = threading.Thread(target=reader)
    t.start()
    t.join(10)  # a liveness check: a reader that queued for the write lock would still wait here
    finished = not t.is_alive()
    release.set()
    w.join(10)
    t.join(10)
    assert finished and seen == [0], "the reader waited for the writer (or saw uncommitted data)"
    db.dispose()


def test_writers_take_turns_and_lose_no_update(tmp_path: Path) -> None:
    db = _db(tmp_path)
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(50):
                with db.session() as s:
                    n = int(s.execute(text("SELECT n FROM counter")).scalar_one())
                    s.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    with db.reads() as r:
        assert r.execute(text("SELECT n FROM counter")).scalar_one() == 400
    db.dispose()


def test_the_event_loop_thread_never_opens_a_session(tmp_path: Path) -> None:
    """A coroutine waiting for the write turn on the loop's thread blocks the holder, whose transaction
    ends in a worker the loop schedules: every request stalled until the 30 s wait ran out. Refused."""
    db = _db(tmp_path)

    async def on_the_loop() -> None:
        for opener in (db.session, db.reads):
            with pytest.raises(BlockingOnEventLoop, match="db.off-event-loop"), opener():
                pass

    async def in_a_worker() -> int:
        def read() -> int:
            with db.reads() as r:
                return int(r.execute(text("SELECT n FROM counter")).scalar_one())
        return await asyncio.to_thread(read)

    asyncio.run(on_the_loop())
    assert asyncio.run(in_a_worker()) == 0
    db.dispose()
