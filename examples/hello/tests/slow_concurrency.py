"""Longer test, run by the ci pipeline only: many concurrent requests."""

from __future__ import annotations

import threading
import unittest
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from hello.server import make_server


class ConcurrencyTest(unittest.TestCase):
    def test_many_concurrent_requests(self) -> None:
        server = make_server(0, "127.0.0.1")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/healthz"

        def fetch(_: int) -> int:
            with urllib.request.urlopen(url) as r:
                return int(r.status)

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(fetch, range(500)))
        server.shutdown()
        server.server_close()
        self.assertEqual(codes, [200] * 500)


if __name__ == "__main__":
    unittest.main()
