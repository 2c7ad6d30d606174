"""`conveyor up` first start and the CLI's handling of a running server."""

from __future__ import annotations

import os
import stat

from tests.support.server import ServerHandle


def test_first_start_creates_admin_token_file(server: ServerHandle) -> None:
    path = server.data_dir / "admin.token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    me = server.api().get("/api/v1/user").json()
    assert me["name"] == "admin" and me["role"] == "admin"
    assert server.api().get("/healthz").json()["status"] == "ok"
    spec = server.api().get("/openapi.json").json()
    assert "/api/v1/repos/{repo}/pulls/{number}/merge" in spec["paths"]


def test_cli_user_create_and_role_errors(server: ServerHandle) -> None:
    token = server.cli("user", "create", "carol-cli", "--role", "reviewer").stdout.strip()
    assert token.startswith("cvy_")
    assert "carol-cli" in server.cli("user", "list").stdout
    p = server.cli("user", "create", "mallory", "--role", "developer", token=token, check=False)
    assert p.returncode == 1 and "403" in p.stderr and "role.manage-users" in p.stderr
    p = server.cli("user", "create", "x", "--role", "king", check=False)
    assert p.returncode == 1 and "unknown role" in p.stderr


def test_anonymous_api_reads_are_off_by_default(server: ServerHandle) -> None:
    import httpx

    r = httpx.get(f"{server.url}/api/v1/repos")
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    r = httpx.post(f"{server.url}/api/v1/repos", json={"name": "x"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["rule"] == "auth.token-invalid"


def test_cli_reports_an_unreachable_server() -> None:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "conveyor", "--server", "http://127.0.0.1:9", "repo", "list"],
                       capture_output=True, text=True, env=dict(os.environ, CONVEYOR_TOKEN="cvy_x"))
    assert p.returncode == 1 and "cannot reach" in p.stderr
