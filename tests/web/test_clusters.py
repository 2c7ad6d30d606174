"""The clusters page reads each agent's /status document (the agent's own StatusBoard, served over HTTP)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from conveyor.agent.status import StatusBoard
from tests.support.postgres import free_port
from tests.support.server import ServerHandle
from tests.web.session import signed_in

DEPLOYMENT = "apps/v1/Deployment/shop-dev/shop"
SERVICE = "v1/Service/shop-dev/shop"


@pytest.fixture
def agent_status() -> Iterator[str]:
    board = StatusBoard(["shop-dev"])
    board.update("shop-dev", state="Ready", reason="ReconciliationSucceeded", message="applied and healthy",
                 last_applied_revision="0123456789abcdef" * 2 + "01234567", inventory=[DEPLOYMENT, SERVICE],
                 drifted=[DEPLOYMENT])
    board.event("shop-dev", "DriftCorrected", "Deployment/shop: spec.replicas 3 -> 1")
    document = json.dumps({"cluster": "nonprod", **board.snapshot()}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self.send_response(200 if self.path == "/status" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/status"
    httpd.shutdown()
    httpd.server_close()


def test_clusters_page_shows_inventory_drift_and_events_from_agents(
    agent_status: str, server_factory: Callable[..., ServerHandle]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/status"
    server = server_factory("sqlite", CONVEYOR_AGENT_STATUS_URLS=f"nonprod={agent_status},prod={dead}")
    html = signed_in(server, server.admin_token).get("/clusters").text
    nonprod = html[html.index('id="cl-nonprod"'):html.index('id="cl-prod"')]
    assert "ReconciliationSucceeded: applied and healthy" in nonprod and "0123456789ab" in nonprod
    deployment_row = nonprod[nonprod.index(DEPLOYMENT):].split("</tr>")[0]
    service_row = nonprod[nonprod.index(SERVICE):].split("</tr>")[0]
    assert "corrected" in deployment_row and "corrected" not in service_row
    assert "DriftCorrected" in nonprod and "spec.replicas 3 -&gt; 1" in nonprod
    prod = html[html.index('id="cl-prod"'):]
    assert "agent status unavailable" in prod
    assert httpx.get(agent_status).status_code == 200  # the agent was up all along


def test_clusters_page_says_which_agent_runs_and_what_flux_last_reported(
    server_factory: Callable[..., ServerHandle], tmp_path: Path
) -> None:
    from tests.clusters.test_flux_events import Env

    server = server_factory("sqlite")
    fx = Env(server, tmp_path)
    plain = server.api().post("/api/v1/clusters", json={"name": "plainagent"}).json()["name"]
    page = signed_in(server, server.admin_token).get("/clusters").text
    flux = page[page.index(f'id="cl-{fx.cluster}"'):]
    assert "agent: Flux" in flux.split("</h2>")[0]
    assert "Flux has sent no event yet" in flux and f"/api/v1/clusters/{fx.cluster}/flux/events" in flux
    assert "Inventory and drift events are features of Conveyor" in flux
    assert "agent: Conveyor" in page[page.index(f'id="cl-{plain}"'):].split("</h2>")[0]
    sha = fx.commit("a: 1\n")
    assert fx.post_signed(fx.event("failed", sha)).json()["posted"]
    page = signed_in(server, server.admin_token).get("/clusters").text
    flux = page[page.index(f'id="cl-{fx.cluster}"'):]
    assert "What Flux last reported" in flux and "ReconciliationFailed" in flux and "Not_A_Valid_Name" in flux
    assert "posted failure" in flux


def test_agents_report_their_status_to_the_server_and_the_page_shows_it(
    server_factory: Callable[..., ServerHandle],
) -> None:
    """No URL configured: Conveyor's agent puts its /status document to the server itself (the
    agent's real Reporter against a real server); only that cluster's agent identity may."""
    from conveyor.agent.reporter import Reporter

    server = server_factory("sqlite")
    api = server.api()
    reg = api.post("/api/v1/clusters", json={"name": "selfreport"}).json()
    other = api.post("/api/v1/clusters", json={"name": "otherc"}).json()
    board = StatusBoard(["shop-dev"])
    board.update("shop-dev", state="Ready", reason="ReconciliationSucceeded", message="applied and healthy",
                 inventory=[DEPLOYMENT, SERVICE], drifted=[DEPLOYMENT])
    board.event("shop-dev", "DriftCorrected", "Deployment/shop: spec.replicas 3 -> 1")
    reporter = Reporter(server.url, reg["agent_token"], "selfreport", None)
    try:
        assert reporter.upload_status(board.snapshot())
    finally:
        reporter.close()
    url = f"{server.url}/api/v1/clusters/selfreport/agent-status"
    for token in (server.admin_token, other["agent_token"]):  # an admin, another cluster's agent
        r = httpx.put(url, json=board.snapshot(), headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 403 and r.json()["rule"] == "cluster.agent-only", r.text
    r = httpx.put(url, json={"syncs": "no"}, headers={"Authorization": f"Bearer {reg['agent_token']}"}, timeout=30)
    assert r.status_code == 400 and r.json()["rule"] == "cluster.agent-status", r.text
    html = signed_in(server, server.admin_token).get("/clusters").text
    sections = {part.split('"', 1)[0]: part for part in html.split('id="cl-')[1:]}
    section = sections["selfreport"]
    assert "reported by the agent" in section and "ReconciliationSucceeded: applied and healthy" in section
    assert "corrected" in section[section.index(DEPLOYMENT):].split("</tr>")[0]
    assert "spec.replicas 3 -&gt; 1" in section
    assert "once this cluster's agent reports them" in sections["otherc"]
