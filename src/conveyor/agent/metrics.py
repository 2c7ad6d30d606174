"""Prometheus metrics in the text exposition format (a handful of counters and one histogram)."""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, str, str], float] = defaultdict(float)
        self.hist_counts: dict[tuple[str, str], list[int]] = {}
        self.hist_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.ready: dict[str, int] = {}

    def inc(self, name: str, sync: str, value: float = 1.0, result: str = "") -> None:
        with self._lock:
            self.counters[(name, sync, result)] += value

    def observe(self, sync: str, result: str, seconds: float) -> None:
        with self._lock:
            counts = self.hist_counts.setdefault((sync, result), [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self.hist_sum[(sync, result)] += seconds

    def set_ready(self, sync: str, ready: bool) -> None:
        with self._lock:
            self.ready[sync] = 1 if ready else 0

    def render(self) -> str:
        helps = {
            "conveyor_agent_applies_total": "Objects written by server-side apply",
            "conveyor_agent_reconciles_total": "Reconciliations by result",
            "conveyor_agent_failures_total": "Failed reconciliations",
            "conveyor_agent_drift_corrections_total": "Objects re-applied because the live state drifted",
            "conveyor_agent_prunes_total": "Objects deleted because they left the revision",
        }
        lines: list[str] = []
        with self._lock:
            for metric, text in helps.items():
                lines += [f"# HELP {metric} {text}", f"# TYPE {metric} counter"]
                for (name, sync, result), value in sorted(self.counters.items()):
                    if name == metric:
                        extra = f',result="{result}"' if result else ""
                        lines.append(f'{metric}{{sync="{sync}"{extra}}} {value:g}')
            metric = "conveyor_agent_reconcile_duration_seconds"
            lines += [f"# HELP {metric} Duration of reconciliations", f"# TYPE {metric} histogram"]
            for (sync, result), counts in sorted(self.hist_counts.items()):
                labels = f'sync="{sync}",result="{result}"'
                for bound, n in zip(BUCKETS, counts, strict=False):
                    lines.append(f'{metric}_bucket{{{labels},le="{bound:g}"}} {n}')
                lines.append(f'{metric}_bucket{{{labels},le="+Inf"}} {counts[-1]}')
                lines.append(f"{metric}_sum{{{labels}}} {self.hist_sum[(sync, result)]:.6f}")
                lines.append(f"{metric}_count{{{labels}}} {counts[-1]}")
            metric = "conveyor_agent_sync_ready"
            lines += [f"# HELP {metric} 1 when the sync is Ready", f"# TYPE {metric} gauge"]
            for sync, v in sorted(self.ready.items()):
                lines.append(f'conveyor_agent_sync_ready{{sync="{sync}"}} {v}')
        return "\n".join(lines) + "\n"
