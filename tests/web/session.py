"""Signing in to the dashboard over plain HTTP, as a browser's form would."""

from __future__ import annotations

import re

import httpx

from tests.support.server import ServerHandle


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


def signed_in(server: ServerHandle, token: str) -> httpx.Client:
    c = httpx.Client(base_url=server.url, timeout=60)
    form = c.get("/login")
    r = c.post("/login", data={"token": token, "csrf": csrf_of(form.text), "next": "/"})
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    return c
