"""The server keeps an idle keep-alive connection open longer than a pause between two requests.

With uvicorn's default of 5 s, a pooled client that waited longer (a CLI call in between, under load)
raced the server's close and got "Server disconnected without sending a response" (seen once in the
test command: tests/registry/test_cache_and_import.py; httpx's pool also expires idle connections
at 5 s, so both sides closed at once). The pause here is 7 s, past the old default; the client keeps
its connection 60 s, so a new connection after the pause means the server closed the old one."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.support.server import ServerHandle


def test_a_connection_idle_for_seven_seconds_still_serves(server_factory: Callable[..., ServerHandle]) -> None:
    server = server_factory("sqlite")
    with httpx.Client(base_url=server.url, limits=httpx.Limits(keepalive_expiry=60)) as client:
        pool = client._transport._pool  # type: ignore[attr-defined]
        assert client.get("/healthz").status_code == 200
        before = list(pool.connections)
        time.sleep(7)
        assert client.get("/healthz").status_code == 200
        assert pool.connections == before, "the server closed the idle connection: the client opened another"
