"""GET / answers with the service's version (and, when the environment gave it one, a fingerprint of
its API key: proof the Secret arrived, never the key); GET /healthz answers ok."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def version() -> str:
    return os.environ.get("APP_VERSION", "0.0.0-dev")


def api_key_fingerprint() -> str | None:
    key = os.environ.get("API_KEY")
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12] if key else None


def answer() -> dict[str, str]:
    body = {"app": "hello", "version": version()}
    if (fingerprint := api_key_fingerprint()) is not None:
        body["api_key"] = fingerprint
    return body


class Handler(BaseHTTPRequestHandler):
    server_version = "hello"

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        if self.path == "/":
            self._send(200, answer())
        elif self.path == "/healthz":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not found"})

    def _send(self, code: int, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def make_server(port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args()
    server = make_server(args.port)
    print(f"hello {version()} listening on :{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
