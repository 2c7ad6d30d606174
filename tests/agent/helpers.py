"""Drive the agent like a user: write agent.yaml, run `conveyor agent run` as a real process, read /status."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.clusters import ClusterHandle
from tests.support.postgres import free_port
from tests.support.server import ServerHandle


def manifest(*objects: dict[str, Any]) -> str:
    return "---\n".join(yaml.safe_dump(o) for o in objects)


def configmap(name: str, annotations: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


_agent_tokens: dict[tuple[str, str], str] = {}


def agent_token(forge: ServerHandle, cluster: str) -> str:
    """The token of the cluster's agent identity (registering the cluster with the forge on first use)."""
    key = (forge.url, cluster)
    if key not in _agent_tokens:
        api = forge.api()
        r = api.post("/api/v1/clusters", json={"name": cluster})
        if r.status_code == 409:
            r = api.post(f"/api/v1/clusters/{cluster}/agent-token")
        assert r.status_code == 201, r.text
        _agent_tokens[key] = r.json()["agent_token"]
    return _agent_tokens[key]


def write_config(path: Path, forge: ServerHandle, cluster: ClusterHandle, syncs: list[dict[str, Any]],
                 port: int | None = None) -> Path:
    cfg = {
        "cluster": {"name": cluster.name, "kubeconfig": str(cluster.kubeconfig)},
        # The agent's own identity: it reads GitOps repositories and posts its cluster's deploy statuses.
        "forge": {"server": forge.url, "token": agent_token(forge, cluster.name), "token_env": None},
        "listen": f"127.0.0.1:{port or free_port()}",
        "state_dir": str(path.parent / f"{path.stem}-state"),
        "syncs": syncs,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_once(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "agent", "run", "--config", str(config), "--once"],
        capture_output=True, text=True, timeout=900,
    )


class AgentProcess:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.url = "http://" + yaml.safe_load(config.read_text())["listen"]
        self.log = config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "agent", "run", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.wait_for("the agent to listen", lambda: httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200,
                      timeout=60)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/status", timeout=10).json())

    def sync(self, name: str) -> dict[str, Any]:
        return next(s for s in self.status()["syncs"] if s["name"] == name)

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 300.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                pytest.fail(f"agent exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                value = check()
            except (httpx.HTTPError, KeyError, StopIteration, AssertionError):
                value = None
            if value:
                return value
            time.sleep(0.3)
        pytest.fail(f"timed out waiting for {what}; status: {json.dumps(self.status_or_none(), indent=1)[-4000:]}\n"
                    f"log:\n{self.log.read_text()[-4000:]}")

    def status_or_none(self) -> Any:
        try:
            return self.status()
        except httpx.HTTPError:
            return None


def saved_status(config: Path, name: str) -> dict[str, Any]:
    state_dir = Path(yaml.safe_load(config.read_text())["state_dir"])
    doc = json.loads((state_dir / "status.json").read_text())
    return dict(next(s for s in doc["syncs"] if s["name"] == name))


def commit_statuses(forge: ServerHandle, repo: str, sha: str) -> dict[str, dict[str, Any]]:
    r = forge.api().get(f"/api/v1/repos/{repo}/statuses/{sha}")
    r.raise_for_status()
    return {s["context"]: s for s in r.json()["statuses"]}


def status_history(forge: ServerHandle, repo: str, sha: str, context: str) -> list[str]:
    """Every state posted for the commit and context, oldest first (from the forge's audit log)."""
    r = forge.api().get("/api/v1/audit", params={"limit": 1000})
    r.raise_for_status()
    rows = [a for a in reversed(r.json()) if a["action"] == "status"
            and a["detail"].get("sha") == sha and a["detail"].get("repo") == repo
            and a["detail"].get("context") == context]
    return [a["detail"]["state"] for a in rows]


def get_json(cluster: ClusterHandle, *args: str) -> Any:
    p = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(p.stdout) if p.returncode == 0 else None


class TcpProxy:
    """A TCP forwarder to the API server that can be cut and restored on the same port (an outage)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self._listener:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
