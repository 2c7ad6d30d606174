"""EngineConfig from the CONVEYOR_PIPELINE_* variables: defaults, typed values, a named error (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.core import Settings
from conveyor.pipelines.config import EngineConfig, containers_root


def test_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("WORKERS", "LEASE_SECONDS", "MAX_LOG_MB", "POLL_SECONDS", "CONTAINERS_ROOT"):
        monkeypatch.delenv(f"CONVEYOR_PIPELINE_{name}", raising=False)
    monkeypatch.delenv("CONVEYOR_ARTIFACT_RETENTION_DAYS", raising=False)
    monkeypatch.setenv("CONVEYOR_PIPELINE_DEFAULT_IMAGE", "cache/shell:1")
    c = EngineConfig.from_env()
    assert (c.concurrency, c.lease_seconds, c.max_log_bytes, c.artifact_retention_days, c.poll_interval,
            c.default_image) == (2, 20, 10 * 1024 * 1024, 90, 0.5, "cache/shell:1")
    assert containers_root(Settings(data_dir=tmp_path)) == tmp_path / "pipelines" / "containers"
    monkeypatch.setenv("CONVEYOR_PIPELINE_WORKERS", "0")
    monkeypatch.setenv("CONVEYOR_PIPELINE_MAX_LOG_MB", "")  # empty: the default
    monkeypatch.setenv("CONVEYOR_ARTIFACT_RETENTION_DAYS", "7")
    monkeypatch.setenv("CONVEYOR_PIPELINE_CONTAINERS_ROOT", str(tmp_path / "c"))
    c = EngineConfig.from_env()
    assert (c.concurrency, c.max_log_bytes, c.artifact_retention_days) == (0, 10 * 1024 * 1024, 7)
    assert containers_root(Settings(data_dir=tmp_path)) == tmp_path / "c"


def test_a_malformed_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_PIPELINE_LEASE_SECONDS", "twenty")
    with pytest.raises(ValueError, match="CONVEYOR_PIPELINE_LEASE_SECONDS"):
        EngineConfig.from_env()
    monkeypatch.setenv("CONVEYOR_PIPELINE_LEASE_SECONDS", "20")
    monkeypatch.setenv("CONVEYOR_ARTIFACT_RETENTION_DAYS", "-1")
    with pytest.raises(ValueError, match="CONVEYOR_ARTIFACT_RETENTION_DAYS"):
        EngineConfig.from_env()
