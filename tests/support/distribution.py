"""CNCF Distribution (Debian's ``docker-registry``) on loopback with a throwaway config: the
upstream in pull-through cache tests and the baseline in the registry benchmark."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.postgres import free_port


class Distribution:
    def __init__(self, root: Path | None = None) -> None:
        binary = shutil.which("docker-registry") or shutil.which("registry")
        if binary is None:
            raise RuntimeError("CNCF Distribution not found: install Debian's 'docker-registry' package")
        self.binary = binary
        self.root = root or Path(tempfile.mkdtemp(prefix="conveyor-distribution-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Distribution:
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: conveyor-tests\n"
        )
        log = open(self.root / "registry.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([self.binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self.proc.returncode}; see {log.name}")
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
