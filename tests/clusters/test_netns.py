"""core/netns.py on its own: named namespaces, and the forwarder that is a namespace's only way to the
host's loopback services (no cluster needed; root needed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.core import netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"cnvt-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    yield name
    netns.delete(name)


class EchoServer:
    """A host loopback server that answers each connection with the byte count it received."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn:
            total = 0
            while chunk := conn.recv(65536):
                total += len(chunk)
            conn.sendall(f"got {total}".encode())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


def _exchange(sock: socket.socket, payload: bytes) -> bytes:
    with sock:
        sock.settimeout(30)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # the half-close must reach the server through the forwarder
        return sock.recv(100)


def test_create_is_idempotent_with_loopback_up_and_delete_removes_it(ns: str) -> None:
    assert netns.exists(ns) and netns.create(ns) == netns.path(ns)
    links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert len(links.splitlines()) == 1 and "lo:" in links and "UP" in links
    assert netns.pids(ns) == []
    sleeper = subprocess.Popen(["sleep", "30"], preexec_fn=netns.preexec(ns))  # noqa: PLW1509
    try:
        assert netns.pids(ns) == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait()
    netns.delete(ns)
    netns.delete(ns)
    assert not netns.exists(ns) and not netns.path(ns).exists()


def test_sysctls_are_the_namespace_own(ns: str) -> None:
    host = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    netns.sysctl(ns, "net.ipv4.ip_forward", "1" if host.strip() == "0" else "0")
    inside = netns.run(ns, ["cat", "/proc/sys/net/ipv4/ip_forward"], capture_output=True, text=True).stdout
    assert inside != host and Path("/proc/sys/net/ipv4/ip_forward").read_text() == host


def test_a_namespace_reaches_host_loopback_only_through_a_forward(ns: str, echo: EchoServer) -> None:
    with pytest.raises(OSError):  # its own loopback is another one
        netns.connect(ns, ("127.0.0.1", echo.port), timeout=2).close()
    with netns.Forwarder(ns, [netns.Forward(("127.0.0.1", 0), ("127.0.0.1", echo.port))]) as fwd:
        inside = fwd.addresses[0]
        with pytest.raises(OSError):  # the listener is not on the host
            socket.create_connection(inside, timeout=2).close()
        payload = os.urandom(8 * 1024 * 1024)
        assert _exchange(netns.connect(ns, inside), payload) == f"got {len(payload)}".encode()
        # many connections at once
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda: results.append(_exchange(netns.connect(ns, inside), b"x" * 1000)))
                   for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [b"got 1000"] * 20
    with pytest.raises(OSError):  # stop() closed the listener
        netns.connect(ns, inside, timeout=2).close()


def test_a_forward_to_a_closed_port_closes_the_connection(ns: str) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with netns.Forwarder(ns, [netns.Forward(("127.0.0.1", 0), ("127.0.0.1", port))]) as fwd:
        sock = netns.connect(ns, fwd.addresses[0])
        sock.settimeout(10)
        assert sock.recv(10) == b""
        sock.close()


def test_forward_targets_must_be_host_loopback() -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        netns.Forward(("127.0.0.1", 80), ("192.0.2.1", 80))
    assert netns.Forward.parse("10.200.0.1:5000=5000") == netns.Forward(("10.200.0.1", 5000), ("127.0.0.1", 5000))
    for bad in ("10.200.0.1:5000", "host:1=127.0.0.1:2", "10.0.0.1:99999=1", "::1"):
        with pytest.raises(ValueError):
            netns.Forward.parse(bad)
    with pytest.raises(ValueError, match="invalid network namespace name"):
        netns.path("../etc")


def test_the_forward_command_is_ready_when_it_says_so_and_stops_on_sigterm(
    ns: str, echo: EchoServer, tmp_path: Path
) -> None:
    ready = tmp_path / "fwd.ready"
    argv = netns.forward_command(ns, [netns.Forward.parse(f"127.0.0.1:7000={echo.port}")], ready)
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.read_text().strip() == str(proc.pid)
        assert _exchange(netns.connect(ns, ("127.0.0.1", 7000)), b"hello") == b"got 5"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not ready.exists()
    finally:
        proc.kill()
        proc.wait()
    assert proc.stderr is not None and "forwarding in" in proc.stderr.read()


def test_the_forward_command_refuses_a_missing_namespace() -> None:
    argv = netns.forward_command("cnvt-missing", [netns.Forward.parse("127.0.0.1:7000=7000")])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "no network namespace named 'cnvt-missing'" in out.stderr
    # the module form works as well
    out = subprocess.run([sys.executable, "-m", "conveyor.core.netns", "delete", "cnvt-missing"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
