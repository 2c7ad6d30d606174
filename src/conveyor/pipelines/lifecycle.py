"""Wiring of the pipelines component into ``conveyor up`` and ``conveyor worker``."""

from __future__ import annotations

import logging

from conveyor.core import Database, Settings, register_consumer
from conveyor.pipelines import queue, statuses, triggers
from conveyor.pipelines.config import EngineConfig
from conveyor.pipelines.identity import service_token
from conveyor.pipelines.worker import WorkerPool

log = logging.getLogger(__name__)


def register(settings: Settings) -> None:
    register_consumer("pipelines.triggers", triggers.TOPICS, triggers.make_handler(settings))
    register_consumer("pipelines.statuses", statuses.TOPICS, statuses.make_handler(settings))


def recover(db: Database, settings: Settings) -> None:
    """At start: the service identity exists, and runs of workers that died on this host are
    re-queued (or failed after their last attempt) at once instead of after their lease."""
    service_token(db, settings)
    n = queue.recover(db, EngineConfig.from_env().max_attempts, is_dead=queue.dead_on_this_host)
    if n:
        log.warning("recovered %d pipeline run(s) interrupted by a stop of their worker", n)


def pool(db: Database, settings: Settings, concurrency: int | None = None) -> WorkerPool | None:
    config = EngineConfig.from_env()
    if concurrency is not None:
        from dataclasses import replace

        config = replace(config, concurrency=concurrency)
    return WorkerPool(db, settings, config) if config.concurrency > 0 else None
