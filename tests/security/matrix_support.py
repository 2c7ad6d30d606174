"""The callers and requests of the authorization matrix (tests/security/test_matrix.py).

``routes_of_app`` lists the write endpoints from the FastAPI app itself, so an endpoint added
without a row in the matrix fails the test. ``Callers`` holds one credential per column: a person
of each role, anonymous, a real run token (the test claims a run as a registered runner), a
cluster's agent token and a runner token. Requests aim at placeholder resources that mostly do not
exist: the matrix checks the authorization answer, which every endpoint gives before it looks its
resources up; what an allowed call then does is each component's own tests' business.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi.routing import iter_route_contexts

from tests.forge.helpers import new_repo, unique
from tests.security.attack import RunnerSide
from tests.support.server import ServerHandle

ROLES = ("developer", "reviewer", "cluster-admin", "admin")
COLUMNS = (*ROLES, "anonymous", "run", "agent", "runner")


def routes_of_app() -> set[tuple[str, str]]:
    from conveyor.core import Settings
    from conveyor.server import create_app

    app = create_app(Settings(data_dir=Path(tempfile.mkdtemp(prefix="matrix-"))))
    found = set()
    for rc in iter_route_contexts(app.routes):
        for method in (getattr(rc, "methods", None) or set()) - {"GET", "HEAD"}:
            found.add((method, str(rc.path)))
    return found


@dataclass
class Callers:
    server: ServerHandle
    tokens: dict[str, str | None]
    values: dict[str, str]

    def call(self, column: str, method: str, path: str, body: Any) -> httpx.Response:
        values = {**self.values, **OVERRIDES.get(path, {})}
        values = {k: self.values.get(v, v) if v in ("repo", "cluster") else v for k, v in values.items()}
        url = re.sub(r"\{(\w+)(:path)?\}", lambda m: values[m.group(1)], path)
        token = self.tokens[column]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if path in WEB:
            return self.web(column, method, url, body)
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        return httpx.request(method, self.server.url + url, headers=headers, timeout=60, **kwargs)

    def web(self, column: str, method: str, url: str, form: dict[str, str]) -> httpx.Response:
        """A dashboard form: sign in with the column's token, then post with the session's CSRF token."""
        with httpx.Client(base_url=self.server.url, timeout=60) as c:
            page = c.get("/login")
            login_csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert login_csrf, page.text
            fields = {"csrf": login_csrf.group(1), "token": self.tokens[column] or "", "next": "/"}
            signed_in = c.post("/login", data=fields)
            if url == "/login":
                return signed_in
            if signed_in.status_code != 303:  # who cannot sign in posts without a session
                return c.post(url, data={"csrf": "none", **form})
            pr = c.get(f"/repos/{self.values['repo']}/pulls/{self.values['number']}")
            csrf = re.search(r'name="csrf" value="([^"]+)"', pr.text)
            assert csrf, pr.text
            return c.post(url, data={"csrf": csrf.group(1), **form})


# Where a placeholder must name a real resource for the endpoint to reach its authorization check.
OVERRIDES = {
    "/repos/{name}/pulls/{number}/review": {"name": "repo"},
    "/repos/{name}/pulls/{number}/merge": {"name": "repo"},
    "/api/v1/clusters/{name}/flux/events": {"name": "cluster"},
    "/api/v1/clusters/{name}/agent-status": {"name": "cluster"},
}
WEB = {"/login", "/logout", "/repos/{name}/pulls/{number}/review", "/repos/{name}/pulls/{number}/merge"}


def make_callers(server: ServerHandle, tmp: Path) -> Callers:
    tokens: dict[str, str | None] = {role: server.create_user(unique(role.replace("-", "")), role) for role in ROLES}
    tokens["admin"] = server.admin_token
    tokens["anonymous"] = None
    admin = server.api()
    cluster = unique("mx")[:12]
    r = admin.post("/api/v1/clusters", json={"name": cluster, "agent": "flux"})  # any agent; flux has events
    assert r.status_code == 201, r.text
    tokens["agent"] = r.json()["agent_token"]

    wc = new_repo(server, tmp)
    wc.commit_file(".conveyor/pipeline.yaml", "ci:\n  - {name: build, run: 'true'}\n")
    assert wc.push("main")[0] == 0
    main_sha = wc.head()
    wc.git("checkout", "-q", "-b", "feature")
    wc.commit_file("f.txt", "f\n")
    assert wc.push("feature")[0] == 0
    pr = admin.post(f"/api/v1/repos/{wc.repo}/pulls", json={"source": "feature", "target": "main", "title": "m"})
    assert pr.status_code == 201, pr.text
    runner = RunnerSide(server, wc.repo)
    started = admin.post(f"/api/v1/repos/{wc.repo}/runs", json={"pipeline": "ci"}).json()
    tokens["run"] = runner.claim(started["id"])["run_token"]  # alive while the matrix runs
    other = admin.post(f"/api/v1/repos/{wc.repo}/runs", json={"pipeline": "ci"}).json()  # others' run, queued
    idle = admin.post("/api/v1/runners", json={"name": unique("idle"), "repos": [unique("none")]})
    assert idle.status_code == 201, idle.text
    tokens["runner"] = idle.json()["token"]
    values = {
        "repo": wc.repo, "name": unique("nobody"), "number": str(pr.json()["number"]), "sha": main_sha,
        "gone": unique("gone"), "branch": "main", "hook_id": "999999", "ident": "999999", "run_id": str(other["id"]),
        "index": "0", "app": unique("noapp"), "cluster": cluster, "env": "dev", "pid": "999999", "key_id": "nokey",
        "policy_id": "999999",
    }
    return Callers(server, tokens, values)
