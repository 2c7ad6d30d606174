"""Keeps the local clusters of an installation running while `conveyor up` runs.

Cluster processes are detached, so they outlive a server restart; this thread restarts those that
died (at start-up, then every ``interval`` seconds). It never creates or deletes a cluster, and it
skips a cluster whose lock is held (a create or delete in progress).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from conveyor.clusters import local
from conveyor.clusters import spec as specs

log = logging.getLogger(__name__)


def restart_dead(data_dir: Path) -> list[str]:
    """Restart dead processes of every ready local cluster; returns the clusters touched."""
    touched = []
    for spec in specs.list_specs(data_dir):
        if spec.kind != specs.LOCAL or spec.phase != specs.READY:
            continue
        dead = local.dead_processes(data_dir, spec)
        if not dead:
            continue
        log.info("cluster %s: restarting %s", spec.name, ", ".join(dead))
        try:
            if local.ensure_running(data_dir, spec.name):
                touched.append(spec.name)
        except Exception:  # noqa: BLE001 - one broken cluster must not stop the others
            log.exception("cluster %s: restart failed", spec.name)
    return touched


class ClusterSupervisor:
    def __init__(self, data_dir: Path, interval: float = 15.0) -> None:
        self.data_dir = data_dir
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cluster-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                restart_dead(self.data_dir)
            except Exception:  # noqa: BLE001
                log.exception("cluster supervisor pass failed")
            self._stop.wait(self.interval)
