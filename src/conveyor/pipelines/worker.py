"""Worker pools: claim queued runs, execute up to ``concurrency`` at once, keep their leases alive.

``conveyor up`` runs one pool; ``conveyor worker`` runs another against the same database, on
the same or another machine (PostgreSQL). Each pool also recovers runs whose worker died.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from conveyor.core import Database, Settings
from conveyor.pipelines import artifacts, queue
from conveyor.pipelines.config import EngineConfig
from conveyor.pipelines.engine import Control, RunExecutor
from conveyor.pipelines.identity import service_token
from conveyor.registry import registry_host

log = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0


class WorkerPool:
    def __init__(self, db: Database, settings: Settings, config: EngineConfig | None = None,
                 owner: str | None = None) -> None:
        self.db, self.settings = db, settings
        self.config = config or EngineConfig.from_env()
        self.owner = owner or queue.worker_identity()
        self.lease = timedelta(seconds=self.config.lease_seconds)
        self._active: dict[int, Control] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._runners: list[threading.Thread] = []
        self._executor: RunExecutor | None = None

    def start(self) -> None:
        token = service_token(self.db, self.settings)
        self._executor = RunExecutor(self.db, self.settings, self.config, token, self.owner,
                                     registry_host(self.settings))
        for target, name in ((self._dispatch, "pipelines-dispatch"), (self._heartbeat, "pipelines-heartbeat")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("pipeline worker %s started with concurrency %d", self.owner, self.config.concurrency)

    def stop(self, timeout: float = 20) -> None:
        """Stop claiming; stop running steps; hand their runs back to the queue."""
        self._stop.set()
        queue.wake()
        with self._lock:
            for control in self._active.values():
                control.shutdown.set()
        deadline = time.monotonic() + timeout
        for t in self._threads + self._runners:
            t.join(max(0.1, deadline - time.monotonic()))

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._active)

    def _dispatch(self) -> None:
        last_recover = last_prune = 0.0
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                if now - last_recover > self.config.lease_seconds / 3:
                    last_recover = now
                    if queue.recover(self.db, self.config.max_attempts):
                        log.warning("re-queued or failed runs whose worker stopped renewing its lease")
                if now - last_prune > PRUNE_EVERY:
                    last_prune = now
                    with self.db.session() as s:
                        artifacts.prune(s, self.settings)
                if self.busy < self.config.concurrency:
                    claim = queue.claim(self.db, self.owner, self.lease)
                    if claim is not None:
                        self._launch(claim.run_id)
                        continue
            except Exception:
                log.exception("pipeline dispatcher iteration failed")
            queue.wait_for_work(self.config.poll_interval)

    def _launch(self, run_id: int) -> None:
        control = Control()
        with self._lock:
            self._active[run_id] = control
        t = threading.Thread(target=self._execute, args=(run_id, control), name=f"run-{run_id}", daemon=True)
        self._runners = [r for r in self._runners if r.is_alive()] + [t]
        t.start()

    def _execute(self, run_id: int, control: Control) -> None:
        assert self._executor is not None
        try:
            self._executor.execute(run_id, control)
        except Exception:
            log.exception("run %s failed in the engine", run_id)
        finally:
            with self._lock:
                self._active.pop(run_id, None)
            queue.wake()

    def _heartbeat(self) -> None:
        interval = max(0.5, min(1.0, self.config.lease_seconds / 10))
        last_renew = 0.0
        while not self._stop.wait(interval):
            with self._lock:
                ids = list(self._active)
            if not ids:
                continue
            try:
                # Cancellation is checked every tick; the lease itself is renewed less often.
                now = time.monotonic()
                lease = self.lease if now - last_renew > self.config.lease_seconds / 3 else None
                stop = queue.renew(self.db, self.owner, ids, lease) if lease else queue.cancelled(self.db, ids)
                if lease:
                    last_renew = now
            except Exception:
                log.exception("lease renewal failed")
                continue
            with self._lock:
                for rid in stop:
                    if rid in self._active:
                        self._active[rid].cancel.set()
