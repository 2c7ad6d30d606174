"""Run the agent: one reconciler thread per sync, the HTTP server, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from types import FrameType

from conveyor.agent.config import AgentConfig
from conveyor.agent.kube import Kube, connect
from conveyor.agent.metrics import Metrics
from conveyor.agent.reconciler import SyncReconciler, state_path
from conveyor.agent.reporter import Reporter
from conveyor.agent.server import AgentServer
from conveyor.agent.status import StatusBoard
from conveyor.agent.verify import HttpSource, KeyRing, Verifier

# The clusters page shows what the agent reports: within a few seconds of a change, and a heartbeat.
STATUS_UPLOAD_EVERY, STATUS_HEARTBEAT = 3.0, 60.0
# The object trees (health, events, logs) are looked at apart from the reconciles, which they must not slow
# down: a look is a handful of lists per namespace plus a few log requests (observe.py).
OBSERVE_EVERY = 10.0

log = logging.getLogger("conveyor.agent")


def dependency_order(config: AgentConfig) -> list[str]:
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ValueError(f"dependency cycle through sync {name}")
        visiting.add(name)
        sync = config.sync(name)
        assert sync is not None
        for dep in sync.depends_on:
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for s in config.syncs:
        visit(s.name)
    return order


def verifier_for(config: AgentConfig, token: str | None) -> tuple[Verifier, HttpSource]:
    registries, insecure = config.conveyor_registries()
    forge = config.forge.server.rstrip("/") if config.forge else None
    forge_host = forge.split("://", 1)[1].split("/", 1)[0] if forge else None
    tokens = {forge_host: token} if forge_host and token else {}
    keyring = KeyRing(forge, token, config.signatures.keys_file, config.state_dir / "signing-keys.json")
    source = HttpSource(tokens, insecure, config.signatures.endpoints)
    return Verifier(source, keyring, registries), source


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.order = dependency_order(config)
        self.kube = Kube(connect(config.cluster.kubeconfig, config.cluster.context))
        self.board = StatusBoard([s.name for s in config.syncs], state_path(config))
        self.metrics = Metrics()
        token = config.forge.resolve_token() if config.forge else None
        self.server = AgentServer(config, self.board, self.metrics, self.trigger)
        target = config.public_url or f"{self.server.url}/status"
        self.reporter = Reporter(config.forge.server if config.forge else None, token, config.cluster.name, target)
        self.verifier, self._registry_http = verifier_for(config, token)
        self.reconcilers = {
            s.name: SyncReconciler(config, s, self.kube, self.board, self.metrics, self.reporter, self.verifier)
            for s in config.syncs
        }
        self.stop_event = threading.Event()

    def trigger(self, name: str) -> None:
        self.reconcilers[name].trigger.set()

    def once(self) -> bool:
        """Reconcile every sync once, dependencies first. True when all are Ready (suspended ones aside)."""
        ok = True
        for name in self.order:
            rec = self.reconcilers[name]
            ready = rec.reconcile()
            ok = ok and (ready or rec.sync.suspend)
        for name in self.order:
            self.reconcilers[name].observe()
        self.reporter.upload_status(self.board.snapshot())
        return ok

    def run(self) -> None:
        self.server.start()
        log.info("agent for cluster %s listening on %s", self.config.cluster.name, self.server.url)
        threads = [
            threading.Thread(target=self.reconcilers[n].run, args=(self.stop_event,), name=f"sync-{n}", daemon=True)
            for n in self.order
        ]
        threads.append(threading.Thread(target=self._upload_status, name="status-upload", daemon=True))
        threads.append(threading.Thread(target=self._observe, name="observe", daemon=True))
        for t in threads:
            t.start()

        def stop(_sig: int, _frame: FrameType | None) -> None:
            self.stop_event.set()
            for rec in self.reconcilers.values():
                rec.trigger.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stop_event.wait()
        for t in threads:
            t.join(timeout=10)
        self.close()

    def _upload_status(self) -> None:
        """Report the status document to the server when it changed, and at least once a minute."""
        last, sent_at = "", 0.0
        while not self.stop_event.is_set():
            doc = self.board.snapshot()
            digest = json.dumps(doc, sort_keys=True, default=str)
            if (digest != last or time.monotonic() - sent_at > STATUS_HEARTBEAT) and self.reporter.upload_status(doc):
                last, sent_at = digest, time.monotonic()
            self.stop_event.wait(STATUS_UPLOAD_EVERY)

    def _observe(self) -> None:
        """Look at every sync's objects (health, owned children, events, logs) every OBSERVE_EVERY seconds."""
        while not self.stop_event.is_set():
            for name in self.order:
                if self.stop_event.is_set():
                    return
                self.reconcilers[name].observe()
            self.stop_event.wait(OBSERVE_EVERY)

    def close(self) -> None:
        self.server.stop()
        self.reporter.close()
        self._registry_http.close()
        self.kube.close()
