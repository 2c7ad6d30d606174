"""Flux v2 as the cluster agent, for real: source-controller and kustomize-controller v1.9.6 (built from
the Go module proxy into ~/.cache/conveyor/flux) reconcile a Conveyor GitOps branch on a local cluster,
out of cluster with its kubeconfig, and kustomize-controller's --events-addr is Conveyor's events URL.

What a Flux user does: `conveyor cluster register NAME --agent flux`, apply the manifests it writes
(GitRepository, Kustomization; the Receiver, Provider and Alert need notification-controller, which the
module proxy does not serve, so they are left out here), and run the controllers with --events-addr.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml

from conveyor.clusters.flux import FluxControllers, FluxUnavailable, ensure_controllers
from conveyor.clusters.flux import run as flux_run
from tests.forge.helpers import new_repo, unique
from tests.support.clusters import ClusterHandle, deployment, deployment_available
from tests.support.server import ServerHandle

pytestmark = pytest.mark.slow

NOTIFICATION_KINDS = {"Receiver", "Provider", "Alert"}


@pytest.fixture(scope="session")
def flux_controllers() -> FluxControllers:
    try:
        return ensure_controllers(progress=lambda line: print(line, flush=True))
    except FluxUnavailable as exc:
        if "Go is not installed" in exc.detail:
            pytest.skip(exc.detail)
        raise


def rendered(namespace: str, image: str, *extra: dict[str, Any]) -> str:
    app = deployment("hello", image)
    app["metadata"]["namespace"] = namespace
    objs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}, app,
                                  *extra]
    return yaml.safe_dump_all(objs, sort_keys=False)


def deploy_history(server: ServerHandle, repo: str, sha: str, context: str) -> list[str]:
    """Every state posted for ``context`` on ``sha``, oldest first (from the audit log)."""
    rows = server.api().get("/api/v1/audit", params={"limit": 1000}).json()
    return [r["detail"]["state"] for r in reversed(rows) if r["action"] == "status"
            and r["detail"].get("context") == context and r["detail"].get("sha") == sha]


def wait_state(server: ServerHandle, repo: str, sha: str, context: str, states: set[str],
               timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        body = server.api().get(f"/api/v1/repos/{repo}/statuses/{sha}").json()
        last = {s["context"]: s for s in body["statuses"]}
        if context in last and last[context]["state"] in states:
            return dict(last[context])
        time.sleep(0.5)
    raise AssertionError(f"{context} on {sha[:12]} never reached {states}: {last}")


class EventTap:
    """A loopback hop between kustomize-controller and Conveyor that keeps every event body it forwards
    (set FLUX_EVENTS_RECORD=DIR to write them out: that is how tests/clusters/flux_events was recorded)."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port}", parts.path, "", ""))
        self.bodies: list[bytes] = []
        tap = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                tap.bodies.append(body)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                r = httpx.post(tap.target, content=body, headers=headers, timeout=30)
                self.send_response(r.status_code)
                self.end_headers()
                self.wfile.write(r.content)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        netloc = f"{parts.username}:{parts.password}@127.0.0.1:{self.httpd.server_address[1]}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def close(self) -> None:
        self.httpd.shutdown()
        out = os.environ.get("FLUX_EVENTS_RECORD")
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            for i, body in enumerate(self.bodies):
                Path(out, f"{i:03d}.json").write_text(json.dumps(json.loads(body), indent=2) + "\n")


def reconcile_now(cluster: ClusterHandle, setup: dict[str, Any]) -> None:
    """What the Receiver does when Conveyor's push webhook arrives (and `flux reconcile source git`)."""
    repo = next(d for d in setup["docs"] if d["kind"] == "GitRepository")["metadata"]["name"]
    cluster.kubectl("-n", "flux-system", "annotate", "--overwrite", f"gitrepository/{repo}",
                    f"reconcile.fluxcd.io/requestedAt={time.time()}")


@pytest.fixture
def flux_setup(server_factory: Any, cluster: ClusterHandle, flux_controllers: FluxControllers,
               tmp_path: Path) -> Iterator[dict[str, Any]]:
    server: ServerHandle = server_factory("sqlite")
    gitops = new_repo(server, tmp_path, unique("gitops"), kind="gitops")
    env = unique("dev")
    gitops.commit_file(f"environments/{env}.yaml", yaml.safe_dump({"cluster": cluster.name, "auto_merge": True}))
    assert gitops.push("main")[0] == 0
    out = server.cli("cluster", "register", cluster.name, "--agent", "flux", "--kubernetes-version", "v1.34.4",
                     "--manifests", str(tmp_path / "flux.yaml")).stdout
    events_addr = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("controllers'"))
    assert f"/api/v1/clusters/{cluster.name}/flux/events" in out and "HMAC key: " in out
    docs = [d for d in yaml.safe_load_all((tmp_path / "flux.yaml").read_text()) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["Alert", "GitRepository", "Kustomization", "Provider", "Receiver", "Secret", "Secret", "Secret"]
    flux_run.install(cluster.kubeconfig, flux_controllers)
    applied = [d for d in docs if d["kind"] not in NOTIFICATION_KINDS]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(applied))
    tap = EventTap(events_addr)
    procs = flux_run.FluxProcesses(tmp_path).start(
        flux_run.commands(flux_controllers, cluster.kubeconfig, tmp_path / "flux", tap.url, tap.url))
    try:
        yield {"server": server, "gitops": gitops, "env": env, "docs": docs, "procs": procs, "tap": tap}
    finally:
        procs.stop()
        tap.close()
        names = [f"{d['kind'].lower()}/{d['metadata']['name']}" for d in applied if d["kind"] != "Secret"]
        cluster.kubectl("-n", "flux-system", "delete", "--wait=false", *names, check=False)


def test_flux_reconciles_a_gitops_branch_and_its_events_become_deploy_statuses(
    flux_setup: dict[str, Any], cluster: ClusterHandle, hello_image: str
) -> None:
    server, gitops, env = flux_setup["server"], flux_setup["gitops"], flux_setup["env"]
    namespace = unique("flux")
    context = f"conveyor/deploy/{cluster.name}/{env}"
    kustomization = next(d for d in flux_setup["docs"] if d["kind"] == "Kustomization")
    assert kustomization["spec"]["path"] == "./rendered" and kustomization["spec"]["prune"] is True
    assert kustomization["spec"]["wait"] is True

    # A good revision: pending while Flux applies and waits for health, then success.
    gitops.git("checkout", "-q", "-b", "envbranch")
    good = gitops.commit_file("rendered/hello.yaml", rendered(namespace, hello_image))
    assert gitops.push(f"env/{env}")[0] == 0
    reconcile_now(cluster, flux_setup)
    st = wait_state(server, gitops.repo, good, context, {"success", "failure"})
    assert st["state"] == "success", st
    assert st["creator"] == f"agent-{cluster.name}"
    assert deployment_available(cluster, namespace, "hello")
    history = deploy_history(server, gitops.repo, good, context)
    assert history[0] == "pending" and history[-1] == "success", history

    # A broken revision: the API server refuses it at apply, Flux reports the error, Conveyor posts failure.
    bad_cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_A_Valid_Name", "namespace": namespace},
              "data": {"a": "b"}}
    broken = gitops.commit_file("rendered/hello.yaml", rendered(namespace, hello_image, bad_cm))
    assert gitops.push(f"env/{env}")[0] == 0
    reconcile_now(cluster, flux_setup)
    st = wait_state(server, gitops.repo, broken, context, {"failure"})
    assert "Not_A_Valid_Name" in st["description"], st
    assert st["creator"] == f"agent-{cluster.name}"

    # Fixing it forward: the next good revision succeeds, and the clusters API shows Flux's last word.
    fixed = gitops.commit_file("rendered/hello.yaml", rendered(namespace, hello_image) + "# fixed\n")
    assert gitops.push(f"env/{env}")[0] == 0
    reconcile_now(cluster, flux_setup)
    assert wait_state(server, gitops.repo, fixed, context, {"success", "failure"})["state"] == "success"
    reports = server.api().get(f"/api/v1/clusters/{cluster.name}/flux/reports").json()
    kust = next(r for r in reports if r["kind"] == "Kustomization")
    assert kust["reason"] == "ReconciliationSucceeded" and fixed in kust["revision"], reports
