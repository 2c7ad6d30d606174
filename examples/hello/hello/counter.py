"""The counter: hello's dependent service, a tiny in-memory hit counter run from the same
image with another command (``python3 -m hello.counter``), so one image build serves both
Deployments.

POST /hits counts one visit and answers the total; GET /hits answers it without counting;
GET /healthz answers ok. The count lives in memory: it starts again at 0 when the pod does (a
demo, not a store).
"""

from __future__ import annotations

import argparse
import os
import threading
from http.server import ThreadingHTTPServer

from hello.server import JSONHandler, version


class Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits = 0

    def add(self) -> int:
        with self._lock:
            self.hits += 1
            return self.hits


class Handler(JSONHandler):
    server_version = "hello-counter"
    counter: Counter

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        if self.path == "/hits":
            self._send(200, {"service": "counter", "version": version(), "hits": self.counter.hits})
        elif self.path == "/healthz":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path == "/hits":
            hits = self.counter.add()
            self._send(200, {"service": "counter", "version": version(), "hits": hits})
        else:
            self._send(404, {"error": "not found"})


def make_server(port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    handler = type("CounterHandler", (Handler,), {"counter": Counter()})
    return ThreadingHTTPServer((host, port), handler)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8001")))
    args = parser.parse_args()
    server = make_server(args.port)
    print(f"hello-counter {version()} listening on :{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
