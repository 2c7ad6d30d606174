"""DORA metrics from promotion records (pure computation over rows)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor.delivery.dora import compute
from conveyor.delivery.models import Promotion

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def promo(state: str, created_h: float, *, committed_h: float | None = None, finished_h: float | None = None,
          failed_h: float | None = None, rollback: bool = False, env: str = "dev") -> Promotion:
    at = lambda h: None if h is None else T0 + timedelta(hours=h)  # noqa: E731
    return Promotion(app="hello", env=env, version=f"v{created_h}", state=state, created_at=at(created_h),
                     updated_at=at(finished_h or created_h), source_committed_at=at(committed_h),
                     finished_at=at(finished_h), failed_at=at(failed_h), is_rollback=rollback)


def test_four_metrics() -> None:
    rows = [
        promo("verified", 0, committed_h=-1, finished_h=0.5),           # lead 1.5 h
        promo("verified", 24, committed_h=23, finished_h=24.5),         # lead 1.5 h
        promo("rolled_back", 48, committed_h=47, failed_h=48.2, finished_h=48.7),  # restore 0.5 h
        promo("failed", 72, committed_h=71, failed_h=72.1),             # restored by the next verified
        promo("verified", 74, committed_h=73.5, finished_h=74.1),       # lead 0.6 h, restores after 2 h
        promo("verified", 80, rollback=True, finished_h=80.2),           # a rollback is not a change
        promo("verified", 1, committed_h=0, finished_h=2, env="qa"),    # other environment
        promo("pr_open", 90),                                           # not finished
    ]
    d = compute(rows, "hello", "dev", now=T0 + timedelta(days=10), window_days=10)
    assert d.deployments == 3
    assert d.deployment_frequency_per_day == 0.3
    assert d.lead_time_seconds == 1.5 * 3600
    assert d.change_failure_rate == 2 / 5
    assert d.time_to_restore_seconds is not None
    assert round(d.time_to_restore_seconds) == round(((0.5 * 3600) + (2.0 * 3600)) / 2)


def test_empty_window() -> None:
    d = compute([], "hello", "prod", now=T0)
    assert d.deployments == 0 and d.lead_time_seconds is None and d.change_failure_rate is None
