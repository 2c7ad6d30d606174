"""A run's own network: a namespace with nothing but loopback, where ``127.0.0.1:<port>`` is this
Conveyor (git, registry, API) and no other address leads anywhere.

Every container of the run (``podman run --network ns:...``) and a Dockerfile's ``RUN`` lines
(``buildah bud --network ns:...``) join it. The runner's forwarder (``core/netns.py``) listens inside
on the server's port and dials the server from the runner's host: so a step reaches the server at
the same ``host:port`` it would use anywhere — and the host's other loopback services (databases,
other servers, a cluster's API server), the host's networks and the internet are simply absent.
Measured by tests/security/test_run_isolation.py: a PR step's probe of another loopback service
fails, while the same probe in an admin-allowed host step reaches it.

Namespaces are named ``cvr-<server>-<runner>-<instance>-<run>`` (``<server>``: a short hash of the
server's URL), so a runner starting again removes the ones its crashed predecessor left (``sweep``)
and never another runner's — not even one of the same name serving another server on this machine
(every ``conveyor up`` here has a runner named ``builtin-<host>``: without the server in the name, a
second server's runner starting up deleted the first one's run networks mid-run).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
from urllib.parse import urlsplit

from conveyor.core import netns
from conveyor.pipelines.runner.podman import RunNetwork

log = logging.getLogger("conveyor.runner")


def _prefix(server: str, runner: str) -> str:
    return f"cvr-{hashlib.sha256(server.encode()).hexdigest()[:8]}-{runner[:24]}-"


def _name(server: str, runner: str, instance: str, run_id: int) -> str:
    return f"{_prefix(server, runner)}{instance[:12]}-{run_id}"[:63]


class RunNetworkScope:
    """The network of one run, from ``open()`` to ``close()``."""

    def __init__(self, server: str, runner: str, instance: str, run_id: int) -> None:
        self.server, self.name = server, _name(server, runner, instance, run_id)
        self.forwarder: netns.Forwarder | None = None

    def open(self) -> RunNetwork:
        parts = urlsplit(self.server)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = str(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0])  # resolved once, here
        try:
            netns.create(self.name)
            fw = netns.Forward(("127.0.0.1", port), (target, port), remote=not _loopback(target))
            self.forwarder = netns.Forwarder(self.name, [fw], log=log.warning).start()
        except OSError as exc:  # not root, or no namespaces here: steps get no network at all
            log.warning("run network %s unavailable (%s): steps run with --network none", self.name, exc)
            self.close()
            return RunNetwork("none", None)
        return RunNetwork(f"ns:{netns.path(self.name)}", f"{parts.scheme}://127.0.0.1:{port}")

    def close(self) -> None:
        if self.forwarder is not None:
            self.forwarder.stop()
            self.forwarder = None
        with contextlib.suppress(OSError):
            netns.delete(self.name)


def _loopback(address: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(address).is_loopback


def sweep(server: str, runner: str, keep_instance: str) -> int:
    """Delete the run networks earlier instances of this runner (of this server) left behind."""
    prefix = _prefix(server, runner)
    removed = 0
    try:
        names = [p.name for p in netns.path("x").parent.iterdir()]
    except OSError:
        return 0
    for name in names:
        if name.startswith(prefix) and not name.startswith(f"{prefix}{keep_instance[:12]}-"):
            with contextlib.suppress(OSError):
                netns.delete(name)
                removed += 1
    return removed
