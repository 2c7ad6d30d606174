"""Per-sync status, Flux style: one Ready condition (True / Unknown while reconciling / False when stalled)."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

READY, RECONCILING, STALLED, SUSPENDED = "Ready", "Reconciling", "Stalled", "Suspended"


@dataclass
class Event:
    at: float
    sync: str
    reason: str
    message: str


@dataclass
class SyncStatus:
    name: str
    state: str = RECONCILING
    reason: str = "Progressing"
    message: str = "not reconciled yet"
    last_applied_revision: str | None = None
    last_attempted_revision: str | None = None
    last_error: str | None = None
    inventory: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    signatures: list[dict[str, Any]] = field(default_factory=list)  # the last revision's image verification
    objects: list[dict[str, Any]] = field(default_factory=list)  # the live object tree (observe.py)
    last_transition_at: float = field(default_factory=time.time)
    last_reconcile_at: float | None = None
    last_success_at: float | None = None

    @property
    def ready(self) -> bool:
        return self.state == READY


class StatusBoard:
    """Thread-safe statuses of all syncs plus a bounded event log; mirrored to a JSON file."""

    def __init__(self, names: list[str], path: Path | None = None, max_events: int = 500) -> None:
        self._lock = threading.Lock()
        self.path = path
        self.max_events = max_events
        self.syncs: dict[str, SyncStatus] = {n: SyncStatus(n) for n in names}
        self.events: list[Event] = []
        if path and path.exists():
            self._restore(path)

    def _restore(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        for row in data.get("syncs", []):
            if row.get("name") in self.syncs:
                st = self.syncs[row["name"]]
                st.last_applied_revision = row.get("last_applied_revision")
                st.last_success_at = row.get("last_success_at")

    def get(self, name: str) -> SyncStatus:
        with self._lock:
            return SyncStatus(**asdict(self.syncs[name]))

    def update(self, name: str, **changes: Any) -> None:
        with self._lock:
            st = self.syncs[name]
            if "state" in changes and changes["state"] != st.state:
                st.last_transition_at = time.time()
            for k, v in changes.items():
                setattr(st, k, v)
        self.save()

    def event(self, sync: str, reason: str, message: str) -> None:
        with self._lock:
            self.events.append(Event(time.time(), sync, reason, message))
            del self.events[: -self.max_events]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "syncs": [asdict(s) for s in self.syncs.values()],
                "events": [asdict(e) for e in self.events[-100:]],
            }

    def save(self) -> None:
        if not self.path:
            return
        data = json.dumps(self.snapshot(), indent=2)
        tmp = self.path.with_suffix(".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(data)
        os.replace(tmp, self.path)
