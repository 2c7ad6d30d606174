"""Helpers for the attacker suite: people with ordinary tokens, a test runner, and "no trace" snapshots.

The servers here run no built-in pipeline workers (``CONVEYOR_PIPELINE_WORKERS=0``): the test itself
is the runner, speaking the runner protocol with a registered runner's token, so it sees exactly what
the server hands a run (its token, its secrets, host execution) without starting a container.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.forge.helpers import WorkingCopy, unique
from tests.support.server import ServerHandle

PROBLEM = "application/problem+json"


def refused(resp: httpx.Response, status: int, rule: str) -> dict[str, Any]:
    """A 4xx problem detail naming ``rule`` (the answer every refusal must give)."""
    assert resp.status_code == status, f"expected {status} {rule}, got {resp.status_code}: {resp.text}"
    assert resp.headers.get("content-type", "").startswith(PROBLEM), resp.headers
    body = resp.json()
    assert body.get("rule") == rule or rule in [b.get("rule") for b in body.get("blockers", [])], body
    return dict(body)


def registry_denied(resp: httpx.Response, status: int, code: str, rule: str | None = None) -> None:
    """An OCI error (the registry's problem format) with ``code`` and, when given, its rule."""
    assert resp.status_code == status, f"expected {status} {code}, got {resp.status_code}: {resp.text}"
    errors = resp.json()["errors"]
    assert [e["code"] for e in errors] == [code], errors
    if rule is not None:
        assert any(d.get("rule") == rule for e in errors for d in (e.get("detail") or [])), errors


@dataclass
class Person:
    server: ServerHandle
    name: str
    token: str
    _api: httpx.Client | None = field(default=None, repr=False)

    @property
    def api(self) -> httpx.Client:
        if self._api is None:
            self._api = self.server.api(self.token)
        return self._api

    def clone(self, repo: str, into: Path) -> WorkingCopy:
        wc = WorkingCopy(self.server, repo, into / f"{repo}-{self.name}-{unique('wc')}", self.name, self.token)
        wc.git("config", "user.name", self.name)
        return wc


def person(server: ServerHandle, role: str, prefix: str | None = None) -> Person:
    name = unique(prefix or role.replace("-", ""))
    return Person(server, name, server.create_user(name, role))


def snapshot(server: ServerHandle, repos: list[str]) -> dict[str, Any]:
    """What a refused request must leave as it was: refs, PRs and reviews, statuses, runs, secrets,
    protection, registry tags and locks, users and tokens (everything but the audit log)."""
    api = server.api()
    out: dict[str, Any] = {}
    for repo in repos:
        branches = api.get(f"/api/v1/repos/{repo}/branches").json()
        pulls = [api.get(f"/api/v1/repos/{repo}/pulls/{p['number']}").json()
                 for p in api.get(f"/api/v1/repos/{repo}/pulls").json()]
        for p in pulls:
            p.pop("mergeability", None)  # computed, not stored
            p.pop("updated_at", None)
        out[repo] = {
            "branches": branches,
            "pulls": pulls,
            "statuses": {b["sha"]: api.get(f"/api/v1/repos/{repo}/statuses/{b['sha']}").json() for b in branches},
            "protection": api.get(f"/api/v1/repos/{repo}/protection").json(),
            "secrets": api.get(f"/api/v1/repos/{repo}/secrets").json(),
            "runs": [{k: r[k] for k in ("id", "state", "sha", "pipeline")}
                     for r in api.get("/api/v1/runs", params={"repo": repo}).json()],
        }
    out["registry"] = {r["name"]: api.get("/api/v1/registry/tags", params={"repository": r["name"]}).json()
                       for r in api.get("/api/v1/registry/repositories").json()}
    out["locks"] = api.get("/api/v1/registry/locks").json()
    users = api.get("/api/v1/users").json()
    out["users"] = users
    out["tokens"] = {u["name"]: [{k: t[k] for k in ("id", "revoked_at")}
                                 for t in api.get(f"/api/v1/users/{u['name']}/tokens").json()]
                     for u in users if u["kind"] == "person"}
    return json.loads(json.dumps(out, default=str))


class RunnerSide:
    """The test acting as a pipeline runner registered for one repository (see the module docstring)."""

    def __init__(self, server: ServerHandle, repo: str) -> None:
        r = server.api().post("/api/v1/runners", json={"name": unique("t"), "repos": [repo]})
        assert r.status_code == 201, r.text
        self.server, self.http = server, server.api(r.json()["token"])

    def claim(self, run_id: int) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = self.http.post("/api/v1/runner/claim", json={"instance": "t1", "wait": 1})
            if r.status_code == 200:
                claim = dict(r.json())
                if claim["run"]["run_id"] == run_id:
                    return claim
                self.finish(claim["run"]["run_id"], "failure")  # an earlier run (a push's): not this test's
                continue
            assert r.status_code == 204, r.text
        raise AssertionError(f"run {run_id} was never handed to the runner")

    def finish(self, run_id: int, state: str = "success") -> None:
        r = self.http.post(f"/api/v1/runner/runs/{run_id}/finish", json={"instance": "t1", "state": state})
        assert r.status_code == 204, r.text


def audit_since(server: ServerHandle, after_id: int) -> list[dict[str, Any]]:
    entries = server.api().get("/api/v1/audit", params={"limit": 1000}).json()
    return [e for e in entries if e["id"] > after_id]


def last_audit_id(server: ServerHandle) -> int:
    entries = server.api().get("/api/v1/audit", params={"limit": 1}).json()
    return int(entries[0]["id"]) if entries else 0
