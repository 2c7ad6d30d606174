"""Wiring of the pipelines component into ``conveyor up``: consumers, start-up recovery, the run
janitor (lapsed leases, artifact retention, CI at a cadence) and the server's own runner."""

from __future__ import annotations

import logging
import time

from conveyor.core import Database, Settings, bind
from conveyor.core.background import BackgroundLoop
from conveyor.pipelines import artifacts, cadence_runs, queue, rebuilds, statuses, triggers
from conveyor.pipelines.config import EngineConfig, containers_root, workspaces_dir
from conveyor.pipelines.identity import ensure_service_user
from conveyor.pipelines.runner.main import Runner
from conveyor.pipelines.runners import ensure_builtin, retire_builtin

log = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0


def register(settings: Settings) -> None:
    bind("pipelines.triggers", triggers.make_handler(settings), triggers.make_give_up(settings))
    bind("pipelines.statuses", statuses.make_handler(settings))
    bind("pipelines.rebuilds", rebuilds.make_handler(settings))


def recover(db: Database, settings: Settings) -> None:
    """At start: the service identity exists."""
    ensure_service_user(db)


class RunJanitor(BackgroundLoop):
    """Re-queues runs whose runner stopped renewing their lease, prunes artifacts, starts batched CI."""

    name = "pipelines-janitor"

    def __init__(self, db: Database, settings: Settings) -> None:
        self.config = EngineConfig.from_env()
        super().__init__(poll_interval=max(1.0, self.config.lease_seconds / 4))
        self.db, self.settings = db, settings
        self._last_prune = 0.0

    def run_once(self) -> bool:
        if queue.recover(self.db, self.config.max_attempts):
            log.warning("re-queued or failed runs whose runner stopped renewing its lease")
        cadence_runs.start_due(self.db, self.settings)
        if time.monotonic() - self._last_prune > PRUNE_EVERY:
            self._last_prune = time.monotonic()
            with self.db.session() as s:
                artifacts.prune(s, self.settings)
        return False


class BuiltinRunner:
    """``conveyor up --runners N``: a runner like any other, talking HTTP to this very server."""

    def __init__(self, db: Database, settings: Settings, concurrency: int) -> None:
        self.db, self.settings, self.concurrency = db, settings, concurrency
        self.runner: Runner | None = None
        self.token_id: int | None = None

    def start(self) -> None:
        self.token_id, token = ensure_builtin(self.db, [])
        self.runner = Runner(self.settings.local_url, token, self.concurrency, workspaces_dir(self.settings),
                             str(containers_root(self.settings)), default_image=EngineConfig.from_env().default_image)
        self.runner.start()

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
        if self.token_id is not None:
            retire_builtin(self.db, self.token_id)


def pool(db: Database, settings: Settings, concurrency: int | None = None) -> BuiltinRunner | None:
    n = EngineConfig.from_env().concurrency if concurrency is None else concurrency
    return BuiltinRunner(db, settings, n) if n > 0 else None
