from __future__ import annotations

import hashlib
import json
import os
import threading
import unittest
import urllib.error
import urllib.request

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

    def test_healthz(self) -> None:
        self.assertEqual(self.get("/healthz"), (200, {"status": "ok"}))

    def test_unknown_path(self) -> None:
        self.assertEqual(self.get("/nope")[0], 404)


if __name__ == "__main__":
    unittest.main()
