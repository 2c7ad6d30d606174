"""The agent's /metrics document: the metric names, labels and values the dashboards and alerts use.

Parsed with prometheus_client's own parser, so the test holds the exposition format to what
Prometheus reads rather than to one spelling of it (label order, ``1`` vs ``1.0``).
"""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conveyor.agent.config import AgentConfig
from conveyor.agent.metrics import COUNTERS, Metrics
from conveyor.agent.server import AgentServer
from conveyor.agent.status import StatusBoard


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counters_histogram_and_gauge_keep_their_names_and_labels() -> None:
    m = Metrics()
    m.inc("conveyor_agent_reconciles_total", "apps", result="success")
    m.inc("conveyor_agent_reconciles_total", "apps", result="success")
    m.inc("conveyor_agent_failures_total", "apps")
    m.inc("conveyor_agent_applies_total", "apps", 3)
    m.inc("conveyor_agent_drift_corrections_total", "other", 1)
    m.observe("apps", "success", 0.3)
    m.observe("apps", "success", 12.0)
    m.set_ready("apps", True)
    m.set_ready("other", False)
    text = m.render().decode()
    got = _samples(text)
    sync = ("sync", "apps")
    assert got[("conveyor_agent_reconciles_total", frozenset({sync, ("result", "success")}))] == 2
    assert got[("conveyor_agent_failures_total", frozenset({sync}))] == 1
    assert got[("conveyor_agent_applies_total", frozenset({sync}))] == 3
    assert got[("conveyor_agent_drift_corrections_total", frozenset({("sync", "other")}))] == 1
    hist = frozenset({sync, ("result", "success")})
    assert got[("conveyor_agent_reconcile_duration_seconds_count", hist)] == 2
    assert got[("conveyor_agent_reconcile_duration_seconds_sum", hist)] == 12.3
    assert got[("conveyor_agent_reconcile_duration_seconds_bucket", hist | {("le", "0.5")})] == 1
    assert got[("conveyor_agent_reconcile_duration_seconds_bucket", hist | {("le", "30.0")})] == 2
    assert got[("conveyor_agent_reconcile_duration_seconds_bucket", hist | {("le", "+Inf")})] == 2
    assert got[("conveyor_agent_sync_ready", frozenset({sync}))] == 1
    assert got[("conveyor_agent_sync_ready", frozenset({("sync", "other")}))] == 0
    for name in COUNTERS:  # every counter is described even before it counts anything
        assert f"# TYPE {name} counter" in text


def test_two_agents_in_one_process_keep_separate_series() -> None:
    a, b = Metrics(), Metrics()
    a.inc("conveyor_agent_applies_total", "apps", 2)
    assert ("conveyor_agent_applies_total", frozenset({("sync", "apps")})) not in _samples(b.render().decode())


def test_the_agent_server_serves_it_with_the_prometheus_content_type(tmp_path: Path) -> None:
    """The real AgentServer on a loopback port (no cluster needed for /metrics)."""
    config = AgentConfig.model_validate({
        "cluster": {"name": "test"}, "listen": "127.0.0.1:0", "state_dir": str(tmp_path),
        "syncs": [{"name": "apps", "url": "http://127.0.0.1:9/git/apps.git"}],
    })
    metrics = Metrics()
    metrics.inc("conveyor_agent_prunes_total", "apps", 4)
    server = AgentServer(config, StatusBoard(["apps"]), metrics, lambda _sync: None).start()
    try:
        r = httpx.get(f"{server.url}/metrics", timeout=10)
    finally:
        server.stop()
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    assert _samples(r.text)[("conveyor_agent_prunes_total", frozenset({("sync", "apps")}))] == 4
