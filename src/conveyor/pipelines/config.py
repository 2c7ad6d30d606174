"""Pipeline engine settings, from CONVEYOR_PIPELINE_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from conveyor.core import Settings


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class EngineConfig:
    concurrency: int  # runs the server's own runner executes at once; 0: none (remote runners only)
    lease_seconds: int  # a worker that stops renewing for this long is considered dead
    max_log_bytes: int  # per step; a step that writes more is stopped and fails
    max_attempts: int  # attempts of a run interrupted by a crash before it is failed
    artifact_retention_days: int
    poll_interval: float
    max_artifact_bytes: int
    default_image: str  # for `run:` steps that name no image

    @classmethod
    def from_env(cls) -> EngineConfig:
        return cls(
            concurrency=_int("CONVEYOR_PIPELINE_WORKERS", 2),
            lease_seconds=_int("CONVEYOR_PIPELINE_LEASE_SECONDS", 20),
            max_log_bytes=_int("CONVEYOR_PIPELINE_MAX_LOG_MB", 10) * 1024 * 1024,
            max_attempts=_int("CONVEYOR_PIPELINE_MAX_ATTEMPTS", 2),
            artifact_retention_days=_int("CONVEYOR_ARTIFACT_RETENTION_DAYS", 90),
            poll_interval=float(os.environ.get("CONVEYOR_PIPELINE_POLL_SECONDS", "0.5")),
            max_artifact_bytes=_int("CONVEYOR_PIPELINE_MAX_ARTIFACT_MB", 512) * 1024 * 1024,
            default_image=os.environ.get("CONVEYOR_PIPELINE_DEFAULT_IMAGE", "cache/debian-python:12"),
        )


def pipelines_dir(settings: Settings) -> Path:
    return settings.data_dir / "pipelines"


def workspaces_dir(settings: Settings) -> Path:
    return pipelines_dir(settings) / "workspaces"


def artifacts_dir(settings: Settings) -> Path:
    return pipelines_dir(settings) / "artifacts"


def containers_root(settings: Settings) -> Path:
    """The pipelines' own image storage (layer cache included), apart from the machine's shared one."""
    env = os.environ.get("CONVEYOR_PIPELINE_CONTAINERS_ROOT")
    return Path(env).expanduser() if env else pipelines_dir(settings) / "containers"


def run_url(settings: Settings, run_id: int) -> str:
    return f"{settings.base_url}/api/v1/runs/{run_id}"


def oldest_cluster_version(session: Session, data_dir: Path) -> str:
    """The Kubernetes version CI validates rendered templates for: the oldest registered cluster's,
    since every environment's cluster must accept them (local clusters of this data dir count too;
    the pinned release when none is known). Computed by the server when a run is claimed."""
    from conveyor.clusters import KUBERNETES_VERSION, list_specs, registrations
    from conveyor.templates import oldest_version

    versions = [r.kubernetes_version for r in registrations(session) if r.kubernetes_version]
    versions += [s.version for s in list_specs(data_dir) if s.version]
    return oldest_version(versions) or KUBERNETES_VERSION
