"""Webhooks: signed deliveries to a real local HTTP receiver, retried after failures, logged."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.forge.helpers import new_repo
from tests.support.server import ServerHandle


class Receiver:
    def __init__(self, fail_first: int = 0, fail_body: bytes = b"") -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        self.fail_body = fail_body
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(outer.fail_body)))
                    self.end_headers()
                    self.wfile.write(outer.fail_body)
                    return
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, pred: Any, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            payloads = [json.loads(b) for _, b in self.received]
            if pred(payloads):
                return payloads
            time.sleep(0.1)
        raise AssertionError(f"webhook not received in time; got {[p.get('action') for p in payloads]}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.httpd.shutdown()


def test_push_pr_and_status_events_are_delivered_signed(
    server: ServerHandle, receiver: Receiver, tmp_path: Path
) -> None:
    wc = new_repo(server, tmp_path)
    secret = "s3cret-value"
    out = server.cli("hook", "add", wc.repo, receiver.url, "--secret", secret, "--events", "push,pull_request,status")
    assert "pull_request,push,status" in out.stdout
    wc.git("checkout", "-q", "-b", "feat")
    sha = wc.commit_file("f.txt", "f\n")
    wc.push("feat")
    api = server.api()
    assert api.post(f"/api/v1/repos/{wc.repo}/pulls", json={"source": "feat", "target": "main", "title": "F"}
                    ).status_code == 201
    assert api.post(f"/api/v1/repos/{wc.repo}/statuses/{sha}", json={"state": "success", "context": "ci"}
                    ).status_code == 201
    payloads = receiver.wait_for(
        lambda ps: {"push", "pull_request.opened", "status"} <= {p["action"] for p in ps}
    )
    push = next(p for p in payloads if p["action"] == "push")
    assert push["repo"] == wc.repo and push["after"] == sha and push["branch"] == "feat"
    for headers, body in receiver.received:
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-conveyor-signature-256"], expected)
        # the header Flux's generic-hmac Receiver verifies, so a Receiver accepts Conveyor's pushes
        assert hmac.compare_digest(headers["x-signature"], expected)
        assert headers["x-conveyor-event"] in ("push", "pull_request", "status")


def test_failed_deliveries_are_retried_and_logged(server: ServerHandle, tmp_path: Path) -> None:
    receiver = Receiver(fail_first=1)
    try:
        wc = new_repo(server, tmp_path)
        hook = server.api().post(f"/api/v1/repos/{wc.repo}/hooks",
                                 json={"url": receiver.url, "secret": "another-secret", "events": ["push"]}).json()
        wc.commit_file("r.txt", "r\n")
        wc.push("main")
        receiver.wait_for(lambda ps: any(p["action"] == "push" for p in ps), timeout=60)
        deliveries = server.api().get(f"/api/v1/repos/{wc.repo}/hooks/{hook['id']}/deliveries").json()
        d = deliveries[0]
        assert d["status"] == "delivered" and d["attempts"] == 2 and d["last_status_code"] == 204
    finally:
        receiver.httpd.shutdown()


def test_bad_hooks_are_refused(server: ServerHandle, tmp_path: Path) -> None:
    wc = new_repo(server, tmp_path)
    api = server.api()
    for body, rule in (
        ({"url": "ftp://x/y", "secret": "longenough"}, "hook.url"),
        ({"url": "http://127.0.0.1:1/x", "secret": "short"}, "hook.secret"),
        ({"url": "http://127.0.0.1:1/x", "secret": "longenough", "events": ["deploy"]}, "hook.events"),
    ):
        r = api.post(f"/api/v1/repos/{wc.repo}/hooks", json=body)
        assert r.status_code == 400 and r.json()["rule"] == rule


def test_loopback_hooks_are_refused_unless_an_admin_allows_them(server: ServerHandle, tmp_path: Path) -> None:
    receiver = Receiver()
    wc = new_repo(server, tmp_path)
    api = server.api()
    try:
        hook = api.post(f"/api/v1/repos/{wc.repo}/hooks",
                        json={"url": receiver.url, "secret": "allowed-secret", "events": ["push"]}).json()
        server.allow_outbound()  # nothing allowed: loopback is refused
        r = api.post(f"/api/v1/repos/{wc.repo}/hooks",
                     json={"url": receiver.url, "secret": "another-secret", "events": ["push"]})
        assert r.status_code == 400 and r.json()["rule"] == "outbound.address", r.text
        for url in ("http://localhost:9/x", "http://[::ffff:127.0.0.1]:9/x", "http://169.254.169.254/latest"):
            r = api.post(f"/api/v1/repos/{wc.repo}/hooks", json={"url": url, "secret": "s3cret-value"})
            assert r.status_code == 400 and r.json()["rule"] == "outbound.address", (url, r.text)
        # A hook added while loopback was allowed is refused at delivery time, visibly.
        wc.commit_file("x.txt", "x\n")
        wc.push("main")
        deadline = time.time() + 30
        while time.time() < deadline:
            ds = api.get(f"/api/v1/repos/{wc.repo}/hooks/{hook['id']}/deliveries").json()
            if ds and ds[0]["last_error"]:
                break
            time.sleep(0.2)
        assert ds[0]["status"] == "pending" and "outbound.address" in ds[0]["last_error"], ds
        assert receiver.received == []
    finally:
        server.allow_outbound("127.0.0.1")
        receiver.httpd.shutdown()


def test_the_delivery_log_shows_the_receivers_answer_to_admins_only(server: ServerHandle, tmp_path: Path) -> None:
    receiver = Receiver(fail_first=100, fail_body=b"internal page: db password is hunter2")
    try:
        wc = new_repo(server, tmp_path)
        olga = server.create_user(f"olga-{wc.repo}", "cluster-admin")  # may manage hooks, is no admin
        hook = server.api().post(f"/api/v1/repos/{wc.repo}/hooks",
                                 json={"url": receiver.url, "secret": "another-secret", "events": ["push"]}).json()
        wc.commit_file("r.txt", "r\n")
        wc.push("main")
        path = f"/api/v1/repos/{wc.repo}/hooks/{hook['id']}/deliveries"
        deadline = time.time() + 30
        while time.time() < deadline:
            d = server.api(olga).get(path).json()[0]
            if d["last_status_code"] == 503:
                break
            time.sleep(0.1)
        assert d["last_error"] == "HTTP 503 Service Unavailable" and d["last_response_excerpt"] is None, d
        assert "hunter2" not in json.dumps(d)
        admin_view = server.api().get(path).json()[0]
        assert admin_view["last_status_code"] == 503 and "hunter2" in admin_view["last_response_excerpt"]
    finally:
        receiver.httpd.shutdown()
