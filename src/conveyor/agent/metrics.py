"""The agent's Prometheus metrics (a handful of counters, one histogram, one gauge), kept and
rendered by prometheus_client so the exposition format is the library's, not ours.

Each ``Metrics`` has its own registry: several agents can run in one process (the tests do) without
their series mixing, and nothing lands in the library's global default registry.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# name -> (help, label names); every counter is per sync, reconciles also by result
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "conveyor_agent_applies_total": ("Objects written by server-side apply", ("sync",)),
    "conveyor_agent_reconciles_total": ("Reconciliations by result", ("sync", "result")),
    "conveyor_agent_failures_total": ("Failed reconciliations", ("sync",)),
    "conveyor_agent_drift_corrections_total": ("Objects re-applied because the live state drifted", ("sync",)),
    "conveyor_agent_prunes_total": ("Objects deleted because they left the revision", ("sync",)),
}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._counters = {
            name: Counter(name, text, labels, registry=self.registry) for name, (text, labels) in COUNTERS.items()
        }
        self._duration = Histogram("conveyor_agent_reconcile_duration_seconds", "Duration of reconciliations",
                                   ("sync", "result"), buckets=BUCKETS, registry=self.registry)
        self._ready = Gauge("conveyor_agent_sync_ready", "1 when the sync is Ready", ("sync",), registry=self.registry)

    def inc(self, name: str, sync: str, value: float = 1.0, result: str = "") -> None:
        counter = self._counters[name]
        labelled = counter.labels(sync=sync, result=result) if result else counter.labels(sync=sync)
        labelled.inc(value)

    def observe(self, sync: str, result: str, seconds: float) -> None:
        self._duration.labels(sync=sync, result=result).observe(seconds)

    def set_ready(self, sync: str, ready: bool) -> None:
        self._ready.labels(sync=sync).set(1 if ready else 0)

    def render(self) -> bytes:
        """The text exposition format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
