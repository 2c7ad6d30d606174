"""The four DORA metrics per app and environment, computed from promotion records.

- deployment frequency: verified deployments per day over the window;
- lead time for changes: source commit to verified in the environment (median);
- change failure rate: deployments that failed (verification, apply, health) / all finished ones;
- time to restore: from a failed deployment to the next verified state of that environment
  (a verified rollback or a verified newer version), median.
Rollbacks themselves are restorations, not deployments, so they are not counted as changes.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from conveyor.delivery.models import Promotion
from conveyor.delivery.states import FAILURE_STATES
from conveyor.delivery.states import PromotionState as S


@dataclass(frozen=True)
class Dora:
    app: str
    env: str
    window_days: int
    deployments: int
    deployment_frequency_per_day: float
    lead_time_seconds: float | None
    change_failure_rate: float | None
    time_to_restore_seconds: float | None


def compute(promotions: list[Promotion], app: str, env: str, now: datetime, window_days: int = 30) -> Dora:
    start = now - timedelta(days=window_days)
    rows = sorted(
        (p for p in promotions if p.app == app and p.env == env and p.created_at >= start),
        key=lambda p: p.created_at,
    )
    changes = [p for p in rows if not p.is_rollback and (p.state == S.VERIFIED or p.state in FAILURE_STATES)]
    verified = [p for p in changes if p.state == S.VERIFIED]
    lead = [
        (p.finished_at - p.source_committed_at).total_seconds()
        for p in verified
        if p.finished_at and p.source_committed_at
    ]
    failures = [p for p in changes if p.state in FAILURE_STATES]
    restores = []
    for f in failures:
        if f.failed_at is None:
            continue
        if f.state == S.ROLLED_BACK and f.finished_at:
            restores.append((f.finished_at - f.failed_at).total_seconds())
            continue
        later = [p.finished_at for p in verified if p.finished_at and p.finished_at >= f.failed_at]
        if later:
            restores.append((min(later) - f.failed_at).total_seconds())
    return Dora(
        app=app,
        env=env,
        window_days=window_days,
        deployments=len(verified),
        deployment_frequency_per_day=len(verified) / window_days,
        lead_time_seconds=statistics.median(lead) if lead else None,
        change_failure_rate=len(failures) / len(changes) if changes else None,
        time_to_restore_seconds=statistics.median(restores) if restores else None,
    )
