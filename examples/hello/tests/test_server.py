from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import unittest
import urllib.error
import urllib.request

from hello import counter
from hello.server import make_server


class ServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        os.environ["APP_VERSION"] = "9.9.9"
        cls.server = make_server(0, "127.0.0.1")
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.base = f"http://127.0.0.1:{cls.server.server_address[1]}"

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.shutdown()
        cls.server.server_close()

    def get(self, path: str) -> tuple[int, dict[str, str]]:
        try:
            with urllib.request.urlopen(self.base + path) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def test_root_reports_version(self) -> None:
        self.assertEqual(self.get("/"), (200, {"app": "hello", "version": "9.9.9"}))

    def test_api_key_is_reported_as_a_fingerprint_only(self) -> None:
        os.environ["API_KEY"] = "s3cret-key"
        try:
            status, body = self.get("/")
        finally:
            del os.environ["API_KEY"]
        self.assertEqual(status, 200)
        expected = "sha256:" + hashlib.sha256(b"s3cret-key").hexdigest()[:12]
        self.assertEqual(body["api_key"], expected)
        self.assertNotIn("s3cret-key", json.dumps(body))

    def test_root_reports_what_the_counter_answered(self) -> None:
        dependency = counter.make_server(0, "127.0.0.1")
        threading.Thread(target=dependency.serve_forever, daemon=True).start()
        os.environ["COUNTER_URL"] = f"http://127.0.0.1:{dependency.server_address[1]}"
        try:
            first, second = self.get("/"), self.get("/")
        finally:
            del os.environ["COUNTER_URL"]
            dependency.shutdown()
            dependency.server_close()
        self.assertEqual(first, (200, {"app": "hello", "version": "9.9.9",
                                       "counter": {"ok": True, "hits": 1, "version": "9.9.9"}}))
        self.assertEqual(second[1]["counter"]["hits"], 2)  # each visit is counted once

    def test_a_counter_that_is_down_is_reported_not_hidden(self) -> None:
        with socket.socket() as s:  # a port nothing listens on: connection refused
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}"
        os.environ["COUNTER_URL"] = url
        try:
            status, body = self.get("/")
        finally:
            del os.environ["COUNTER_URL"]
        self.assertEqual(status, 200)  # hello itself is up; it says which part is not
        self.assertEqual(body["version"], "9.9.9")
        self.assertIs(body["counter"]["ok"], False)
        self.assertEqual(body["counter"]["url"], url)
        self.assertIn("refused", body["counter"]["error"].lower())

    def test_a_counter_that_fails_is_reported_with_its_status(self) -> None:
        dependency = counter.make_server(0, "127.0.0.1")
        threading.Thread(target=dependency.serve_forever, daemon=True).start()
        # a path the counter does not serve: it answers 404
        os.environ["COUNTER_URL"] = f"http://127.0.0.1:{dependency.server_address[1]}/nothing"
        try:
            body = self.get("/")[1]
        finally:
            del os.environ["COUNTER_URL"]
            dependency.shutdown()
            dependency.server_close()
        self.assertEqual(body["counter"]["ok"], False)
        self.assertEqual(body["counter"]["error"], "answered 404")

    def test_healthz(self) -> None:
        self.assertEqual(self.get("/healthz"), (200, {"status": "ok"}))

    def test_unknown_path(self) -> None:
        self.assertEqual(self.get("/nope")[0], 404)


if __name__ == "__main__":
    unittest.main()
