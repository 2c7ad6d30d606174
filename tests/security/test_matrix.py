"""Every write endpoint × every caller: the authorization answer, in one table (docs/security.md has it too).

Columns: a person of each role (developer, reviewer, cluster-admin, admin), anonymous, a run's token,
a cluster agent's token, a runner's token. A cell is ``ok`` (authorization let the call through: any
answer but 401/403 — an allowed call on a placeholder resource may still be a 404 or 422), ``401``
(with ``auth.token-required``), ``403 <rule>`` (a problem detail naming the rule), or ``login`` (the
dashboard sends the caller to sign in). The rows are checked against the app's own routes, so a new
write endpoint without a row fails here. Runs against a real server on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.security.matrix_support import COLUMNS, Callers, make_callers, routes_of_app
from tests.support.server import ServerHandle

_I = {"instance": "m1"}
D = "sha256:" + "0" * 64
# (method, path, body or form, expected per column: developer reviewer cluster-admin admin anonymous run agent runner)
# Shorthands below: A = 401, T = 403 token.scope, each other cell spelled out.
MATRIX: list[tuple[str, str, Any, str]] = [
    # core: users, tokens, settings
    ("POST", "/api/v1/users", {"name": "matrix-user", "role": "developer"},
     "403:role.manage-users 403:role.manage-users 403:role.manage-users ok A T T T"),
    ("PATCH", "/api/v1/users/{name}", {"disabled": False},
     "403:role.manage-users 403:role.manage-users 403:role.manage-users ok A T T T"),
    ("POST", "/api/v1/users/{name}/tokens", {},
     "403:role.manage-users 403:role.manage-users 403:role.manage-users ok A T T T"),
    ("DELETE", "/api/v1/users/{name}/tokens/{ident}", None,
     "403:role.manage-users 403:role.manage-users 403:role.manage-users ok A T T T"),
    ("PUT", "/api/v1/settings/outbound", {"allow": ["127.0.0.1"]},
     "403:role.manage-users 403:role.manage-users 403:role.manage-users ok A T T T"),
    # forge
    ("POST", "/api/v1/repos", {"name": "matrix-repo"}, "ok ok ok ok A T T T"),
    ("DELETE", "/api/v1/repos/{gone}", None,
     "403:role.delete-repo 403:role.delete-repo 403:role.delete-repo ok A T T T"),
    ("PUT", "/api/v1/repos/{repo}/protection/{branch:path}", {},
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("DELETE", "/api/v1/repos/{repo}/protection/{branch:path}", None,
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("POST", "/api/v1/repos/{repo}/pulls", {"source": "feature", "target": "main", "title": "m"},
     "ok ok ok ok A T T T"),
    ("POST", "/api/v1/repos/{repo}/pulls/{number}/reviews", {"state": "comment"}, "ok ok ok ok A T T T"),
    ("POST", "/api/v1/repos/{repo}/pulls/{number}/merge", {}, "ok ok ok ok A T T T"),
    ("POST", "/api/v1/repos/{repo}/pulls/{number}/close", None, "ok ok ok ok A T T T"),
    ("POST", "/api/v1/repos/{repo}/pulls/{number}/revert", None, "ok ok ok ok A T T T"),
    # the run token's own pipeline context on its own commit, pending: the one caller allowed
    ("POST", "/api/v1/repos/{repo}/statuses/{sha}", {"state": "pending", "context": "conveyor/ci"},
     "403:status.reserved-context 403:status.reserved-context 403:status.reserved-context "
     "403:status.reserved-context A ok 403:status.reserved-context 403:status.reserved-context"),
    ("POST", "/api/v1/repos/{repo}/hooks", {"url": "http://127.0.0.1:9/hook", "secret": "s"},
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("DELETE", "/api/v1/repos/{repo}/hooks/{hook_id}", None, "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    # clusters
    ("POST", "/api/v1/clusters", {"name": "matrix-c"}, "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("POST", "/api/v1/clusters/{name}/agent-token", None, "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("DELETE", "/api/v1/clusters/{name}", None, "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("POST", "/api/v1/clusters/{name}/flux/manifests", None,
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("POST", "/api/v1/clusters/{name}/flux/key", None, "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    # only the cluster's own agent (or its HMAC key)
    ("POST", "/api/v1/clusters/{name}/flux/events", {},
     "403:flux.agent-only 403:flux.agent-only 403:flux.agent-only 403:flux.agent-only "
     "401:flux.credentials-required 403:flux.agent-only ok 403:flux.agent-only"),
    ("PUT", "/api/v1/clusters/{name}/agent-status", {"syncs": [], "events": []},
     "403:cluster.agent-only 403:cluster.agent-only 403:cluster.agent-only 403:cluster.agent-only "
     "A 403:cluster.agent-only ok 403:cluster.agent-only"),
    ("PUT", "/api/v1/clusters/{name}/age-recipient", {"age_recipient": "age1matrix"},
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    # pipelines: runs, secrets
    ("POST", "/api/v1/runs/{run_id}/cancel", None, "403:run.owner 403:run.owner ok ok A T T T"),
    ("POST", "/api/v1/runs/{run_id}/retry", None, "403:run.owner 403:run.owner ok ok A T T T"),
    ("POST", "/api/v1/repos/{repo}/runs", {"pipeline": "pr"}, "ok ok ok ok A T T T"),
    ("PUT", "/api/v1/repos/{repo}/secrets/{name}", {"value": "v"},
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("DELETE", "/api/v1/repos/{repo}/secrets/{name}", None, "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    # the runner protocol: runner tokens only (a step never holds one)
    ("POST", "/api/v1/runner/hello", _I, "R"),
    ("POST", "/api/v1/runner/claim", {**_I, "wait": 0}, "R"),
    ("POST", "/api/v1/runner/runs/{run_id}/heartbeat", _I, "R"),
    ("POST", "/api/v1/runner/runs/{run_id}/steps", {**_I, "steps": []}, "R"),
    ("PATCH", "/api/v1/runner/runs/{run_id}/steps/{index}", {**_I, "state": "running"}, "R"),
    ("POST", "/api/v1/runner/runs/{run_id}/logs", {**_I, "chunks": []}, "R"),
    # ...but a run's token uploads its own run's artifacts (not another run's, as here)
    ("PUT", "/api/v1/runner/runs/{run_id}/artifacts/{name}?kind=file&media_type=text/plain&instance=m1", None,
     "N N N N N T N ok"),
    ("POST", "/api/v1/runner/runs/{run_id}/finish", {**_I, "state": "failure"}, "R"),
    ("POST", "/api/v1/runner/runs/{run_id}/sign", {**_I, "repository": "apps/x", "digest": D}, "R"),
    ("POST", "/api/v1/runner/runs/{run_id}/release", _I, "R"),
    ("POST", "/api/v1/runners", {"name": "matrix-r", "repos": ["nothing"]},
     "403:role.manage-users 403:role.manage-users 403:role.manage-users ok A T T T"),
    ("DELETE", "/api/v1/runners/{name}", None,
     "403:role.manage-users 403:role.manage-users 403:role.manage-users ok A T T T"),
    ("PUT", "/api/v1/pipelines/host-execution", {"repos": []},
     "403:role.manage-users 403:role.manage-users 403:role.manage-users ok A T T T"),
    # delivery
    ("POST", "/api/v1/gitops", {"repo": "matrix-gitops"}, "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("POST", "/api/v1/apps/{app}/promote", {"env": "dev"}, "ok ok ok ok A T T T"),
    ("POST", "/api/v1/apps/{app}/rollback", {"env": "dev"}, "ok ok ok ok A T T T"),
    ("POST", "/api/v1/freezes", {"reason": "matrix"}, "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("POST", "/api/v1/freezes/end", {"reason": "matrix"}, "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("POST", "/api/v1/apps/{app}/holds/{env}/release", {"reason": "m"}, "ok ok ok ok A T T T"),
    ("POST", "/api/v1/promotions/{pid}/override", {"reason": "m"}, "ok ok ok ok A T T T"),
    ("PUT", "/api/v1/apps/{app}/envs/{env}/secrets/{name}", {"values": {"k": "dg=="}}, "ok ok ok ok A T T T"),
    ("DELETE", "/api/v1/apps/{app}/envs/{env}/secrets/{name}", None, "ok ok ok ok A T T T"),
    # registry administration
    ("POST", "/api/v1/registry/locks", {"repository": "users/nobody/x", "tag": "1"},
     "403:registry.lock-scope 403:registry.lock-scope ok ok A T T T"),
    ("DELETE", "/api/v1/registry/locks?repository=users/nobody/x&tag=1", None,
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("POST", "/api/v1/registry/immutable-tags", {"repository": "matrix", "pattern": "v*"},
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("DELETE", "/api/v1/registry/immutable-tags?repository=matrix&pattern=v*", None,
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("POST", "/api/v1/registry/anonymous-prefixes", {"prefix": "matrix"},
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("DELETE", "/api/v1/registry/anonymous-prefixes?prefix=matrix", None,
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("POST", "/api/v1/registry/upstreams", {"prefix": "matrix-up", "url": "http://127.0.0.1:9"},
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("DELETE", "/api/v1/registry/upstreams?prefix=matrix-up", None,
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("POST", "/api/v1/registry/gc", {"dry_run": True}, "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("POST", "/api/v1/registry/signing-keys/rotate", None,
     "403:role.manage-users 403:role.manage-users 403:role.manage-users ok A T T T"),
    ("POST", "/api/v1/registry/signing-keys/{key_id}/revoke", None,
     "403:role.manage-users 403:role.manage-users 403:role.manage-users ok A T T T"),
    ("POST", "/api/v1/registry/refresh-policies", {"kind": "upstream", "target": "matrix-up", "interval_seconds": 3600},
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("DELETE", "/api/v1/registry/refresh-policies/{policy_id}", None,
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    ("POST", "/api/v1/registry/refresh-policies/{policy_id}/run", None,
     "403:role.manage-repo 403:role.manage-repo ok ok A T T T"),
    # the dashboard's forms (people sign in; other tokens cannot)
    ("POST", "/login", {}, "ok ok ok ok 401:auth.token-required 401:auth.person-only 401:auth.person-only "
     "401:auth.person-only"),
    ("POST", "/logout", {}, "ok ok ok ok login login login login"),
    ("POST", "/repos/{name}/pulls/{number}/review", {"action": "comment", "body": "m"},
     "ok ok ok ok login login login login"),
    ("POST", "/repos/{name}/pulls/{number}/merge", {"method": "merge"}, "ok ok ok ok login login login login"),
]
# Shorthand rows and cells.
_SHORT = {"R": "N N N N N N N ok", "N": "401:runner.token", "A": "401:auth.token-required", "T": "403:token.scope"}


def expected(cells: str) -> dict[str, str]:
    words = _SHORT.get(cells, cells).split()
    words = [_SHORT.get(w, w) for w in words]
    assert len(words) == len(COLUMNS), cells
    return dict(zip(COLUMNS, words, strict=True))


def answer(resp: httpx.Response) -> str:
    """The cell a response makes: ``ok``, ``login``, or ``<status>:<rule>``."""
    if resp.status_code == 303 and resp.headers.get("location", "").startswith("/login"):
        signed_out = "conveyor_session" in resp.headers.get("set-cookie", "")  # what /logout does
        return "ok" if signed_out else "login"
    if resp.status_code == 422 and resp.headers.get("content-type", "").startswith("application/problem+json") \
            and resp.json().get("rule") == "request.schema":
        return f"schema: {resp.json()['detail']}"  # the row's request is wrong, not an answer
    if resp.status_code in (401, 403):
        rule = ""
        if resp.headers.get("content-type", "").startswith("application/problem+json"):
            rule = str(resp.json().get("rule", ""))
        else:  # the dashboard shows the refusal on its page
            for candidate in ("auth.person-only", "auth.token-required", "auth.token-invalid"):
                if candidate in resp.text:
                    rule = candidate
        return f"{resp.status_code}:{rule}"
    return "ok"


def path_of(row: tuple[str, str, Any, str]) -> str:
    return row[1].split("?")[0].replace("{gone}", "{repo}")


def test_every_write_endpoint_has_a_row() -> None:
    rows = [(m, path_of(r)) for r in MATRIX for m in [r[0]]]
    assert len(rows) == len(set(rows)), "a route has two rows"
    assert set(rows) == routes_of_app()


@pytest.fixture(scope="module", params=BACKENDS)
def callers(request: pytest.FixtureRequest, server_factory: Callable[..., ServerHandle],
            tmp_path_factory: pytest.TempPathFactory) -> Callers:
    # No built-in runner (the test claims the run whose token it uses) and a lease that outlasts the test.
    server = server_factory(request.param, CONVEYOR_PIPELINE_WORKERS="0", CONVEYOR_PIPELINE_LEASE_SECONDS="3600")
    return make_callers(server, Path(tmp_path_factory.mktemp("matrix")))


def test_the_authorization_matrix(callers: Callers) -> None:
    wrong = []
    for method, path, body, cells in MATRIX:
        want = expected(cells)
        for column in COLUMNS:
            got = answer(callers.call(column, method, path, body))
            if got != want[column]:
                wrong.append(f"{method} {path} as {column}: expected {want[column]}, got {got}")
    assert not wrong, "\n".join(wrong)
