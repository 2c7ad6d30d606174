"""Smoke test run inside the built image: serve on a free port and check both endpoints."""

from __future__ import annotations

import json
import sys
import threading
import urllib.request

from hello.server import make_server, version


def main() -> int:
    server = make_server(0, "127.0.0.1")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    with urllib.request.urlopen(f"{base}/") as r:
        root = json.load(r)
    with urllib.request.urlopen(f"{base}/healthz") as r:
        health = json.load(r)
    server.shutdown()
    ok = root.get("version") == version() and health == {"status": "ok"}
    print(f"GET / -> {root}; GET /healthz -> {health}: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
