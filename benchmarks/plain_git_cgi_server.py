"""The anchor for the forge benchmark: `git http-backend` behind a minimal threaded CGI server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


def make_handler(root: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _cgi(self) -> None:
            url = urlsplit(self.path)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": root,
                "GIT_HTTP_EXPORT_ALL": "1",
                "REMOTE_USER": "bench",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": url.path,
                "QUERY_STRING": url.query,
            }
            for h, var in (("Content-Type", "CONTENT_TYPE"), ("Content-Length", "CONTENT_LENGTH"),
                           ("Content-Encoding", "HTTP_CONTENT_ENCODING"), ("Git-Protocol", "HTTP_GIT_PROTOCOL")):
                if self.headers.get(h):
                    env[var] = self.headers[h]
            proc = subprocess.Popen(["git", "http-backend"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert proc.stdin and proc.stdout
            length = int(self.headers.get("Content-Length") or 0)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    proc.stdin.write(self.rfile.read(size))
                    self.rfile.readline()
            elif length:
                remaining = length
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    proc.stdin.write(chunk)
                    remaining -= len(chunk)
            proc.stdin.close()
            status = "200 OK"
            headers = []
            while True:
                line = proc.stdout.readline().decode("latin-1").rstrip("\r\n")
                if not line:
                    break
                k, _, v = line.partition(":")
                if k.lower() == "status":
                    status = v.strip()
                else:
                    headers.append((k, v.strip()))
            code, _, reason = status.partition(" ")
            self.send_response(int(code), reason)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while True:
                data = proc.stdout.read1(1 << 16)
                if not data:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
            proc.wait()

        do_GET = _cgi
        do_POST = _cgi

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    root, port = sys.argv[1], int(sys.argv[2])
    assert shutil.which("git")
    ThreadingHTTPServer(("127.0.0.1", port), make_handler(root)).serve_forever()


if __name__ == "__main__":
    main()
