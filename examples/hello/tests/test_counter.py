from __future__ import annotations

import json
import threading
import unittest
import urllib.error
import urllib.request

from hello import counter


class CounterTest(unittest.TestCase):
    def setUp(self) -> None:
        self.server = counter.make_server(0, "127.0.0.1")
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def tearDown(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def call(self, path: str, method: str = "GET") -> tuple[int, dict[str, object]]:
        data = b"" if method == "POST" else None
        try:
            request = urllib.request.Request(self.base + path, data=data, method=method)
            with urllib.request.urlopen(request) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def test_post_counts_and_get_reads(self) -> None:
        self.assertEqual(self.call("/hits")[1]["hits"], 0)
        self.assertEqual(self.call("/hits", "POST")[1]["hits"], 1)
        self.assertEqual(self.call("/hits", "POST")[1]["hits"], 2)
        status, body = self.call("/hits")
        self.assertEqual((status, body["service"], body["hits"]), (200, "counter", 2))

    def test_each_server_counts_on_its_own(self) -> None:
        other = counter.make_server(0, "127.0.0.1")
        try:
            self.call("/hits", "POST")
            self.assertEqual(other.RequestHandlerClass.counter.hits, 0)
        finally:
            other.server_close()

    def test_healthz_and_unknown_paths(self) -> None:
        self.assertEqual(self.call("/healthz"), (200, {"status": "ok"}))
        self.assertEqual(self.call("/nope")[0], 404)
        self.assertEqual(self.call("/nope", "POST")[0], 404)


if __name__ == "__main__":
    unittest.main()
