"""A request's unit of work is committed before its response leaves (core/http.py ``SessionDep``).

FastAPI runs the exit of a dependency with yield after the response by default; then a client can
act on a 201 before the commit (seen on PostgreSQL: a PR just created answered 404), and a failing
commit leaves a 2xx for lost work. The test watches, at the moment the response starts, whether
another connection already sees the row the request wrote."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text

from conveyor.core import Database, SessionDep
from conveyor.core.http import AppState


def test_the_request_commits_before_its_response_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = Database(f"sqlite:///{path}")
    with db.session() as s:
        s.execute(text("CREATE TABLE things (x INTEGER)"))
    app = FastAPI()
    app.state.conveyor = AppState(settings=None, db=db)  # type: ignore[arg-type]  # the route needs only the DB

    @app.post("/things", status_code=201)
    def create(session: SessionDep) -> dict[str, bool]:
        session.execute(text("INSERT INTO things VALUES (1)"))
        return {"ok": True}

    seen_at_start: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            with sqlite3.connect(path) as other:
                seen_at_start.append(other.execute("SELECT count(*) FROM things").fetchone()[0])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "path": "/things", "raw_path": b"/things", "query_string": b"", "headers": [],
             "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "root_path": ""}
    asyncio.run(app(scope, receive, send))
    assert seen_at_start == [1], "the response started before the request's transaction committed"
