"""GET / answers with the service's version (and, when the environment gave it one, a fingerprint of
its API key: proof the Secret arrived, never the key) and what its dependency, the counter
service (``hello.counter``, deployed by the same chart), answered; GET /healthz answers ok.

The counter is found by its Service's DNS name, which the chart passes in ``COUNTER_URL``. When
it does not answer, GET / still answers 200 and says so under ``counter`` (``ok: false`` and
why): hello stays up, and whoever checks it (CD's verification) sees which part is missing.
/healthz does not call the counter, so a counter outage does not take hello's pods out of their
Service."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def version() -> str:
    return os.environ.get("APP_VERSION", "0.0.0-dev")


def api_key_fingerprint() -> str | None:
    key = os.environ.get("API_KEY")
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12] if key else None


def counter_answer(url: str, timeout: float) -> dict[str, object]:
    """Count this visit at the counter (POST /hits): its total and version, or why it did not
    answer."""
    request = urllib.request.Request(url.rstrip("/") + "/hits", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            got = json.load(r)
        return {"ok": True, "hits": int(got["hits"]), "version": str(got.get("version", ""))}
    except urllib.error.HTTPError as e:
        return {"ok": False, "url": url, "error": f"answered {e.code}"}
    except (OSError, ValueError, KeyError, TypeError) as e:  # refused, timeout, no name, not JSON
        reason = getattr(e, "reason", e)
        return {"ok": False, "url": url, "error": f"{type(e).__name__}: {reason}"}


def answer() -> dict[str, object]:
    body: dict[str, object] = {"app": "hello", "version": version()}
    if (fingerprint := api_key_fingerprint()) is not None:
        body["api_key"] = fingerprint
    if url := os.environ.get("COUNTER_URL"):
        body["counter"] = counter_answer(url, float(os.environ.get("COUNTER_TIMEOUT", "2")))
    return body


class JSONHandler(BaseHTTPRequestHandler):
    """JSON answers and no access log: what hello and its counter (``hello.counter``) share."""

    def _send(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Handler(JSONHandler):
    server_version = "hello"

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        if self.path == "/":
            self._send(200, answer())
        elif self.path == "/healthz":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not found"})


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
