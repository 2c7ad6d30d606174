"""The agent's status reports outlast a forge outage (issue 16): a real HTTP server on loopback that
is down when the verdict is reported and comes up later still gets it, exactly once and the newest
one; a refusal (4xx) is not retried. No cluster needed."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from conveyor.agent.reporter import Reporter


class _Forge:
    """A stand-in for the statuses endpoint only (what the reporter talks to), answering ``code``."""

    def __init__(self, port: int, code: int = 201) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        received, answer = self.received, code

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.append((self.path, body))
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, predicate: Any, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_verdict_reported_while_the_forge_is_down_arrives_when_it_is_back() -> None:
    port = _free_port()
    reporter = Reporter(f"http://127.0.0.1:{port}", "token", "prod", None)
    try:
        assert reporter.report("gitops", "a" * 40, "apps", "pending", "applying")
        assert reporter.report("gitops", "a" * 40, "apps", "success", "applied and healthy")  # replaces it
        assert reporter.queued() == 1
        time.sleep(2.0)  # several retries fail meanwhile
        forge = _Forge(port)
        try:
            _wait("the queued verdict", lambda: forge.received and reporter.queued() == 0)
            time.sleep(1.0)
            assert [(p, b["state"], b["context"]) for p, b in forge.received] == [
                (f"/api/v1/repos/gitops/statuses/{'a' * 40}", "success", "conveyor/deploy/prod/apps")]
        finally:
            forge.stop()
    finally:
        reporter.close()


def test_a_refused_report_is_not_retried() -> None:
    port = _free_port()
    forge = _Forge(port, code=403)
    reporter = Reporter(f"http://127.0.0.1:{port}", "token", "prod", None)
    try:
        assert not reporter.report("gitops", "b" * 40, "apps", "success", "applied")
        time.sleep(1.5)
        assert len(forge.received) == 1 and reporter.queued() == 0
    finally:
        reporter.close()
        forge.stop()
