"""Bad input to the REST API gets a 4xx problem detail naming the rule, never a 5xx (issue 13)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.core.limits import LIST_BODY_CHARS, MAX_BODY_BYTES
from tests.forge.helpers import new_repo
from tests.support.bad_input import deep_json
from tests.support.server import ServerHandle


def problem(r: httpx.Response, status: int, rule: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["rule"] == rule, r.text[:300]


def post_raw(api: httpx.Client, path: str, raw: bytes) -> httpx.Response:
    return api.post(path, content=raw, headers={"Content-Type": "application/json"})


@pytest.fixture
def repo(server: ServerHandle) -> str:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    assert server.api().post("/api/v1/repos", json={"name": name}).status_code == 201
    return name


def test_nul_bytes(server: ServerHandle, repo: str) -> None:
    api = server.api()
    problem(api.get("/api/v1/repos/a%00b"), 400, "request.nul")
    problem(api.get(f"/api/v1/repos/{repo}/commits/main%00x/status"), 400, "request.nul")
    problem(api.get("/api/v1/runs", params={"repo": "a\x00b"}), 400, "request.nul")
    problem(api.post("/api/v1/repos", json={"name": "a\x00b"}), 400, "request.nul")
    problem(api.post(f"/api/v1/repos/{repo}/pulls", json={"source": "a", "target": "main", "title": "t\x00"}),
            400, "request.nul")
    problem(api.post("/ui/login", data={"token": "cvy_\x00"}), 400, "request.nul")


def test_integers_beyond_64_bits(server: ServerHandle, repo: str) -> None:
    api = server.api()
    problem(api.get(f"/api/v1/repos/{repo}/pulls/{2**64}"), 400, "request.integer-range")
    problem(api.get(f"/api/v1/runs/{2**63}"), 400, "request.integer-range")
    problem(api.get("/api/v1/audit", params={"limit": str(10**30)}), 400, "request.integer-range")
    problem(post_raw(api, f"/api/v1/repos/{repo}/protection/main", b'{"approvals": 1' + b"0" * 30 + b"}"),
            400, "request.integer-range")
    # Within 64 bits but beyond a 32-bit column (PostgreSQL): a 4xx too, not a 500.
    assert api.get(f"/api/v1/repos/{repo}/pulls/{2**63 - 1}").status_code in (400, 404)
    assert api.get(f"/api/v1/repos/{repo}/pulls/{2**31}").status_code in (400, 404)


def test_deep_nesting_surrogates_and_encoding(server: ServerHandle) -> None:
    api = server.api()
    problem(post_raw(api, "/api/v1/repos", deep_json(100_000).encode()), 400, "request.json-depth")
    problem(post_raw(api, "/api/v1/repos", b'{"name": ' + deep_json(65).encode() + b"}"), 400, "request.json-depth")
    problem(post_raw(api, "/api/v1/repos", b'{"name": "x\\ud800y"}'), 400, "request.surrogate")
    problem(post_raw(api, "/api/v1/repos", b'{"\\udfff": 1}'), 400, "request.surrogate")
    problem(post_raw(api, "/api/v1/repos", b'{"name": "caf\xe9"}'), 400, "request.encoding")
    # A surrogate *pair* is a valid character.
    r = post_raw(api, "/api/v1/repos", json.dumps({"name": "x", "description": "\U0001f600"}).encode())
    assert r.status_code in (201, 409), r.text


def test_body_size_is_limited_before_parsing(server: ServerHandle) -> None:
    api = server.api()
    big = b'{"name": "' + b"x" * MAX_BODY_BYTES + b'"}'
    problem(post_raw(api, "/api/v1/repos", big), 413, "request.size")

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off while reading
        yield b'{"name": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    problem(api.post("/api/v1/repos", content=chunks(), headers={"Content-Type": "application/json"}),
            413, "request.size")


def test_text_fields_have_length_limits_and_lists_truncate(server: ServerHandle, repo: str) -> None:
    api = server.api()
    r = api.post(f"/api/v1/repos/{repo}/pulls", json={"source": "a", "target": "main", "title": "t",
                                                      "body": "x" * 70_000})
    problem(r, 422, "request.schema")
    assert "body" in r.json()["detail"]
    problem(api.post(f"/api/v1/repos/{repo}/pulls", json={"source": "a", "target": "main", "title": "t" * 301}),
            422, "request.schema")
    problem(api.post(f"/api/v1/repos/{repo}/statuses/{'a' * 40}",
                     json={"state": "success", "target_url": "http://x/" + "y" * 2000}), 422, "request.schema")


def test_listings_truncate_long_bodies(server: ServerHandle, tmp_path: Path) -> None:
    wc = new_repo(server, tmp_path)
    wc.git("checkout", "-q", "-b", "long")
    wc.commit_file("l.txt", "l\n")
    wc.push("long")
    api = server.api()
    body = "word " * 10_000
    r = api.post(f"/api/v1/repos/{wc.repo}/pulls", json={"source": "long", "target": "main", "title": "t",
                                                         "body": body})
    assert r.status_code == 201, r.text
    listed = api.get(f"/api/v1/repos/{wc.repo}/pulls").json()[0]
    assert listed["body_truncated"] is True and listed["body"] == body[:LIST_BODY_CHARS]
    whole = api.get(f"/api/v1/repos/{wc.repo}/pulls/{listed['number']}").json()
    assert whole["body"] == body and whole["body_truncated"] is False
