"""What a pull request's pipeline step can reach, tried as an attacker would.

The same probe runs twice: in a PR run (a container on the run's own network, holding only its run
token) and, as the control that shows the probe works, in a CI step an administrator allowed on the
runner's host. The control sees the data dir, the service tokens and a loopback service; the PR step
must see none of them, nor a secret it was not given.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pipelines.helpers import log_text, repo_with_pipeline, wait_for_run
from tests.support.server import ServerHandle

PROBE = """\
if [ -r {data}/admin.token ]; then echo "PROBE data-dir readable"; else echo "PROBE data-dir unreadable"; fi
if cat {data}/admin.token {data}/pipelines.token 2>/dev/null | grep -q cvy_; then echo "PROBE service-token found"; \
else echo "PROBE service-token absent"; fi
get() {{ (printf 'GET %s HTTP/1.0\\r\\n\\r\\n' "$2"; sleep 2) | busybox nc -w 5 127.0.0.1 "$1" 2>/dev/null; }}
if get {port} / | grep -q loopback-secret; then echo "PROBE loopback reached"; \
else echo "PROBE loopback unreachable"; fi
port=${{CONVEYOR_SERVER##*:}}
if get $port /healthz | grep -q '"ok"'; then echo "PROBE conveyor reached"; else echo "PROBE conveyor unreachable"; fi
env | rev | sed 's/^/PROBE-ENV /'
"""


@pytest.fixture(scope="module")
def loopback_service() -> Iterator[int]:
    """Some other service on the host's loopback (a database, a metadata endpoint...)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"loopback-secret\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield int(httpd.server_address[1])
    httpd.shutdown()


def probe_lines(server: ServerHandle, run_id: int) -> dict[str, str]:
    out = {}
    for line in log_text(server, run_id).splitlines():
        if line.startswith("PROBE "):
            key, _, value = line[len("PROBE "):].partition(" ")
            out[key] = value
    return out


def step_env(server: ServerHandle, run_id: int) -> str:
    """The step's environment as it printed it (reversed, so masking does not hide what we look for)."""
    return "\n".join(ln[len("PROBE-ENV "):][::-1] for ln in log_text(server, run_id).splitlines()
                     if ln.startswith("PROBE-ENV "))


def indent(script: str, n: int) -> str:
    return "\n".join(" " * n + ln for ln in script.splitlines())


def test_a_pr_step_reaches_no_data_dir_no_service_token_no_loopback_service_and_no_ungiven_secret(
        server: ServerHandle, tmp_path: Path, loopback_service: int) -> None:
    probe = PROBE.format(data=server.data_dir, port=loopback_service)
    pipeline = (f"pr:\n  - name: probe\n    run: |\n{indent(probe, 6)}\n"
                "  - name: secret\n    env: {S: '${{ secrets.DEPLOY_KEY }}'}\n    run: echo got it\n"
                f"ci:\n  - name: control\n    host: true\n    run: |\n{indent(probe, 6)}\n")
    wc, main_sha = repo_with_pipeline(server, tmp_path, pipeline)
    api = server.api()
    r = api.put(f"/api/v1/repos/{wc.repo}/secrets/DEPLOY_KEY", json={"value": "very-secret-value"})
    assert r.status_code == 204, r.text
    admin_token = server.admin_token

    # The control: a CI step an admin allowed on the host sees all of it (so the probe can see).
    assert wait_for_run(server, wc.repo, main_sha, "ci")["state"] == "failure"  # host execution not enabled yet
    r = api.put("/api/v1/pipelines/host-execution", json={"repos": [wc.repo]})
    assert r.status_code == 200, r.text
    # ...for deployable runs only (reviewed code: a CI run of a commit on the protected default branch).
    assert api.put(f"/api/v1/repos/{wc.repo}/protection/main", json={}).status_code == 200
    retried = int(server.cli("run", "retry", str(wait_for_run(server, wc.repo, main_sha, "ci")["id"])).stdout)
    control = wait_for_run(server, wc.repo, main_sha, "ci", limit=600)
    assert control["id"] == retried and control["state"] == "success", log_text(server, retried)
    seen = probe_lines(server, retried)
    assert seen == {"data-dir": "readable", "service-token": "found", "loopback": "reached",
                    "conveyor": "reached"}, seen

    # The PR step: none of it.
    wc.git("checkout", "-q", "-b", "attack")
    head = wc.commit_file("x.txt", "x\n")
    assert wc.push("attack")[0] == 0
    server.cli("pr", "create", wc.repo, "--from", "attack", "--to", "main", "--title", "harmless")
    run = wait_for_run(server, wc.repo, head, "pr")
    seen = probe_lines(server, run["id"])
    # ...except this Conveyor, which the run's own network reaches (git, registry, API).
    assert seen == {"data-dir": "unreadable", "service-token": "absent", "loopback": "unreachable",
                    "conveyor": "reached"}, seen
    env = step_env(server, run["id"])
    assert "CONVEYOR_TOKEN=cvy_" in env  # the run's own token, and that is all
    assert admin_token not in env and "cvy_" not in env.replace("CONVEYOR_TOKEN=cvy_", "")
    # A secret of the default scope (CI of protected branches) is not handed to a PR run at all.
    assert run["state"] == "failure" and run["failed_step"] == "secret"
    assert "unknown secret 'DEPLOY_KEY'" in run["message"]
    assert "very-secret-value" not in log_text(server, run["id"])


def test_a_host_step_in_a_pr_pipeline_is_refused_even_where_host_execution_is_enabled(
        server: ServerHandle, tmp_path: Path) -> None:
    wc, _ = repo_with_pipeline(server, tmp_path, "pr:\n  - {name: on-host, host: true, run: echo escaped}\n")
    server.api().put("/api/v1/pipelines/host-execution", json={"repos": [wc.repo]})
    wc.git("checkout", "-q", "-b", "hostile")
    head = wc.commit_file("y.txt", "y\n")
    assert wc.push("hostile")[0] == 0
    server.cli("pr", "create", wc.repo, "--from", "hostile", "--to", "main", "--title", "y")
    run = wait_for_run(server, wc.repo, head, "pr")
    assert run["state"] == "failure" and "rule pipeline.host-execution" in run["message"]
    assert "escaped" not in log_text(server, run["id"])
