"""The clusters page reads each agent's /status document (the agent's own StatusBoard, served over HTTP)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.agent.status import StatusBoard
from tests.support.postgres import free_port
from tests.support.server import ServerHandle
from tests.web.demo import Demo
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


HOSTILE = '<script>alert("x")</script>'


def reported_tree(ns: str) -> list[dict[str, Any]]:
    """An object tree as the agent's observe.py reports it: a Deployment, its ReplicaSet and Pod, a
    Service; the pod's name and a log line carry markup (a hostile workload, or a compromised agent)."""
    pod = f"shop-7d9-x{HOSTILE}"

    def node(kind: str, name: str, parent: str | None, health: str, message: str, sync: str | None,
             **extra: Any) -> dict[str, Any]:
        return {"id": f"{kind}/{ns}/{name}", "kind": kind, "namespace": ns, "name": name, "parent": parent,
                "health": health, "message": message, "sync": sync, "sync_message": "", "events": [],
                "logs": None, **extra}

    return [
        node("Deployment", "shop", None, "InProgress", "readyReplicas: 0/1", "Synced",
             events=[{"type": "Normal", "reason": "ScalingReplicaSet", "message": "Scaled up to 1", "count": 1,
                      "at": 1.0}]),
        node("Service", "shop", None, "Current", "service ready", "Synced"),
        node("ReplicaSet", "shop-7d9", f"Deployment/{ns}/shop", "InProgress", "Ready: 0/1", None),
        node("Pod", pod, f"ReplicaSet/{ns}/shop-7d9", "Failed", "container app: CrashLoopBackOff", None,
             events=[{"type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container",
                      "count": 7, "at": 2.0}],
             logs={"container": "app", "previous": True,
                   "lines": ["listening on :8080", f"</pre>{HOSTILE}", "panic: no database"]}),
    ]


class TreeParser(HTMLParser):
    """data-object ids of the page's object trees, each with the chain of objects it is nested in."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str | None] = []
        self.chains: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "li":
            oid = dict(attrs).get("data-object")
            if oid:
                self.chains[oid] = [o for o in self.stack if o]
            self.stack.append(oid)

    def handle_endtag(self, tag: str) -> None:
        if tag == "li" and self.stack:
            self.stack.pop()


def test_agent_reports_an_object_tree_that_both_pages_show_escaped(demo: Demo) -> None:
    """The dev environment's objects as a tree (Deployment -> ReplicaSet -> Pod, the Service beside)
    with health, sync state, events and the pod's log lines, on the clusters page and the app's board;
    names and log lines are text, never markup."""
    from tests.agent.helpers import agent_token

    server, sync, ns = demo.server, f"{demo.app}-dev", f"{demo.app}-dev"
    url = f"{server.url}/api/v1/clusters/nonprod/agent-status"
    board = StatusBoard([sync])
    board.update(sync, state="Stalled", reason="HealthCheckFailed", message="pod crashing",
                 objects=reported_tree(ns))
    r = httpx.put(url, json=board.snapshot(), timeout=30,
                  headers={"Authorization": f"Bearer {agent_token(server, 'nonprod')}"})
    assert r.status_code == 204, r.text
    client = signed_in(server, server.admin_token)
    pages = {"clusters": client.get("/clusters").text, "board": client.get(f"/apps/{demo.app}").text}
    pages["clusters"] = pages["clusters"][pages["clusters"].index('id="cl-nonprod"'):]
    pages["board"] = pages["board"][pages["board"].index('id="env-dev"'):pages["board"].index('id="env-qa"')]
    pod = f"Pod/{ns}/shop-7d9-x{HOSTILE}"
    for name, html in pages.items():
        parser = TreeParser()
        parser.feed(html)
        assert parser.chains.get(pod) == [f"Deployment/{ns}/shop", f"ReplicaSet/{ns}/shop-7d9"], name
        assert parser.chains.get(f"Service/{ns}/shop") == [], name
        assert HOSTILE not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html, name
        pod_item = html[html.index("CrashLoopBackOff") - 600:]
        assert "s-Failed" in pod_item and "BackOff" in pod_item and "×7" in pod_item, name
        assert "panic: no database" in pod_item and "(previous run)" in pod_item, name
        assert "ScalingReplicaSet" in html and "s-Synced" in html and "1 Failed" in html, name


def test_oversize_or_malformed_object_trees_are_refused_with_the_rule(
    server_factory: Callable[..., ServerHandle],
) -> None:
    """A compromised agent cannot store more than the agent's own caps allow, nor states that are not
    health or sync states (they would become CSS classes)."""
    server = server_factory("sqlite")
    reg = server.api().post("/api/v1/clusters", json={"name": "bigreport"}).json()
    url = f"{server.url}/api/v1/clusters/bigreport/agent-status"
    headers = {"Authorization": f"Bearer {reg['agent_token']}"}

    def put(objects: list[dict[str, Any]]) -> httpx.Response:
        return httpx.put(url, json={"syncs": [{"name": "s", "objects": objects}], "events": []}, headers=headers,
                         timeout=30)

    base = reported_tree("ns")
    many = [{**base[1], "id": f"Service/ns/s{i}", "name": f"s{i}"} for i in range(301)]
    noisy = [{**base[0], "events": base[0]["events"] * 21}]
    chatty = [{**base[3], "logs": {"container": "app", "lines": ["x"] * 51}}]
    long_logs = [{**base[3], "id": f"Pod/ns/p{i}", "logs": {"container": "app", "lines": ["y" * 300] * 50}}
                 for i in range(6)]  # 90 kB: within the 1 MiB body limit, beyond 64 KiB of log
    for objects, says in ((many, "301 objects"), (noisy, "21 events"), (chatty, "51 log lines"),
                          (long_logs, "bytes of log lines")):
        r = put(objects)
        assert r.status_code == 413 and r.json()["rule"] == "cluster.agent-status-size", r.text
        assert says in r.json()["detail"], r.text
    odd = [{**base[0], "health": 'Current" onmouseover="x', "sync": "<b>", "parent": "Nowhere/x"}]
    assert put(odd).status_code == 204
    html = signed_in(server, server.admin_token).get("/clusters").text
    section = html[html.index('id="cl-bigreport"'):]
    assert "s-Unknown" in section and "onmouseover" not in section and "&lt;b&gt;" not in section
    parser = TreeParser()
    parser.feed(section)
    assert parser.chains == {"Deployment/ns/shop": []}
