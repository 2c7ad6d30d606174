"""Runs a real `conveyor up` process for tests and talks to it like a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.postgres import free_port


@dataclass
class ServerHandle:
    data_dir: Path
    database_url: str | None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # The tests' webhook receivers and upstream registries listen on loopback, which the outbound
    # policy refuses unless an admin allows it (tests/core/test_outbound.py shows the refusal).
    outbound_allow: tuple[str, ...] = ("127.0.0.1",)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def env(self, token: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(CONVEYOR_SERVER=self.url, CONVEYOR_DATA_DIR=str(self.data_dir))
        env["CONVEYOR_TOKEN"] = token or self.admin_token
        return env

    def start(self) -> ServerHandle:
        # `run:` steps without an image use the tests' small shell image (tests/support/images.py).
        env = dict(os.environ, CONVEYOR_PIPELINE_DEFAULT_IMAGE="cache/shell:1", **self.extra_env)
        if self.database_url:
            env["CONVEYOR_DATABASE_URL"] = self.database_url
        else:
            env.pop("CONVEYOR_DATABASE_URL", None)
        log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "up", "--data-dir", str(self.data_dir),
                 "--port", str(self.port), "--log-level", "warning"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.time() + 180  # a guard against a hang, generous for loaded machines
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {log_path}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    self.allow_outbound(*self.outbound_allow)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    def allow_outbound(self, *hosts: str) -> None:
        """Replace the outbound allow-list (an admin setting) with ``hosts``."""
        with self.api() as api:
            api.put("/api/v1/settings/outbound", json={"allow": list(hosts)}).raise_for_status()

    def terminate(self) -> None:
        """Ask the server to stop without waiting (stop() then waits): servers stopped together take
        the seconds their shutdown needs once, not once each."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def api(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token or self.admin_token}"}, timeout=60
        )

    def cli(self, *args: str, token: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [sys.executable, "-m", "conveyor", *args], env=self.env(token), capture_output=True, text=True,
            timeout=120,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"conveyor {' '.join(args)} failed ({p.returncode}): {p.stderr}{p.stdout}")
        return p

    def create_user(self, name: str, role: str) -> str:
        r = self.api().post("/api/v1/users", json={"name": name, "role": role})
        r.raise_for_status()
        return str(r.json()["token"])

    def git_url(self, repo: str, user: str = "admin", token: str | None = None) -> str:
        return f"http://{user}:{token or self.admin_token}@127.0.0.1:{self.port}/git/{repo}.git"


def git(*args: str, cwd: Path | None = None, check: bool = True, env: dict[str, str] | None = None) -> Any:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    base_env.update(
        GIT_AUTHOR_NAME="Test", GIT_AUTHOR_EMAIL="test@example.invalid", GIT_COMMITTER_NAME="Test",
        GIT_COMMITTER_EMAIL="test@example.invalid", GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1",
    )
    base_env.update(env or {})
    p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=base_env)
    if check and p.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {p.stderr}{p.stdout}")
    return p
