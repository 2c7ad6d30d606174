"""Image verification inside another writer's transaction (delivery's live diff on a GitOps PR).

The demo's server logs showed delivery holding SQLite's write turn 30-34 s at every GitOps PR it
opened (`core/db.py` names the holder now): the live diff checks image signatures, and the key lookup
opened a session of its own, which waited for the write turn its own thread held until WRITER_WAIT
ran out. Meanwhile every other writer waited too: git fetches, runners and CLI calls answered 500.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from conveyor.core.db import Database
from conveyor.registry.verification import DatabaseKeys


def test_the_key_lookup_does_not_wait_for_the_write_turn_its_caller_holds(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    db.migrate()
    with db.session() as s:
        s.execute(text("SELECT 1"))  # this thread now holds the write turn, as a promotion step does
        assert DatabaseKeys(db).keys() == []  # before: "database is locked: no write turn within 30 s"
