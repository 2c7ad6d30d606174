"""Smoke test run inside the built image: serve hello and its counter on free ports and check that
hello answers with its version and what the counter counted, and that both are healthy."""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.request

from hello import counter
from hello.server import make_server, version


def get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url) as r:
        body: dict[str, object] = json.load(r)
        return body


def main() -> int:
    dependency = counter.make_server(0, "127.0.0.1")
    threading.Thread(target=dependency.serve_forever, daemon=True).start()
    os.environ["COUNTER_URL"] = f"http://127.0.0.1:{dependency.server_address[1]}"
    server = make_server(0, "127.0.0.1")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    root, health = get(f"{base}/"), get(f"{base}/healthz")
    counter_health = get(f"{os.environ['COUNTER_URL']}/healthz")
    server.shutdown()
    dependency.shutdown()
    answered = root.get("counter")
    counted = isinstance(answered, dict) and answered.get("ok") is True
    healthy = health == {"status": "ok"} == counter_health
    ok = root.get("version") == version() and healthy and counted
    print(f"GET / -> {root}; GET /healthz -> {health}: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
