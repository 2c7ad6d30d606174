"""registry.repos.in_transaction: a lost unique race is retried a few times, then surfaces (SQLite, no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.core import Database
from conveyor.registry.repos import in_transaction


def _db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.session() as s:
        s.execute(text("CREATE TABLE t (name TEXT PRIMARY KEY)"))
    return db


def test_a_lost_race_is_retried_and_the_winner_is_read(tmp_path: Path) -> None:
    db = _db(tmp_path)
    calls: list[int] = []

    def insert_or_read(s: Session) -> str:
        calls.append(1)
        s.execute(text("INSERT INTO t VALUES ('a') ON CONFLICT DO NOTHING"))
        if len(calls) < 3:  # another writer got there first, twice (its row rolls back with ours)
            s.execute(text("INSERT INTO t VALUES ('a')"))
        return str(s.execute(text("SELECT name FROM t")).scalar_one())

    assert in_transaction(db, insert_or_read) == "a"
    assert len(calls) == 3


def test_the_last_attempt_error_surfaces(tmp_path: Path) -> None:
    db = _db(tmp_path)
    calls: list[int] = []

    def always_conflicts(s: Session) -> None:
        calls.append(1)
        s.execute(text("INSERT INTO t VALUES ('b') ON CONFLICT DO NOTHING"))
        s.execute(text("INSERT INTO t VALUES ('b')"))

    with pytest.raises(IntegrityError):
        in_transaction(db, always_conflicts, attempts=3)
    assert len(calls) == 3
