"""The agent's HTTP endpoints: GET /status, GET /metrics, GET /healthz, POST /hooks/{sync} (forge push webhook).

A standard-library threading server: the agent needs four routes and no async framework.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from conveyor.agent.config import AgentConfig
from conveyor.agent.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from conveyor.agent.metrics import Metrics
from conveyor.agent.status import StatusBoard

log = logging.getLogger("conveyor.agent.server")

SIGNATURE_HEADER = "X-Conveyor-Signature-256"
MAX_BODY = 1 << 20


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class AgentServer:
    def __init__(self, config: AgentConfig, board: StatusBoard, metrics: Metrics,
                 trigger: Callable[[str], None]) -> None:
        self.config, self.board, self.metrics, self.trigger = config, board, metrics, trigger
        host, port = config.host_port
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="agent-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> AgentServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()

    def status_document(self) -> dict[str, Any]:
        """The status board, less pod log lines: /status answers anyone who reaches the port (in a
        cluster, the agent's Service); logs go only to the server, with the agent's token."""
        doc = self.board.snapshot()
        for sync in doc["syncs"]:
            sync["objects"] = [{**o, "logs": None} for o in sync.get("objects") or []]
        return {"cluster": self.config.cluster.name, **doc}

    def hook(self, sync_name: str, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
        sync = self.config.sync(sync_name)
        if sync is None:
            return 404, {"error": f"no sync named {sync_name}"}
        secret = sync.secret()
        if not secret:
            return 403, {"error": "webhooks are disabled for this sync (no webhook_secret)"}
        if not signature or not hmac.compare_digest(sign(secret, body), signature):
            return 401, {"error": "bad signature"}
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return 400, {"error": "body is not JSON"}
        branch = payload.get("branch") or str(payload.get("ref", "")).removeprefix("refs/heads/")
        if branch and branch != sync.branch:
            return 202, {"triggered": False, "reason": f"push to {branch}, sync follows {sync.branch}"}
        self.board.event(sync.name, "WebhookReceived", f"push {str(payload.get('after', ''))[:12]} to {branch}")
        self.trigger(sync.name)
        return 202, {"triggered": True}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug(format, *args)

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, data: Any) -> None:
                self._send(code, json.dumps(data, indent=2).encode(), "application/json")

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/status":
                    self._json(200, agent.status_document())
                elif path == "/metrics":
                    self._send(200, agent.metrics.render(), METRICS_CONTENT_TYPE)
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                path = self.path.split("?")[0]
                if not path.startswith("/hooks/"):
                    self._json(404, {"error": "not found"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._json(413, {"error": "payload too large"})
                    return
                body = self.rfile.read(length)
                code, data = agent.hook(path.removeprefix("/hooks/"), body, self.headers.get(SIGNATURE_HEADER))
                self._json(code, data)

        return Handler
