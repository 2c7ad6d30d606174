"""Pipeline engine settings, from CONVEYOR_PIPELINE_* environment variables (typed by
pydantic-settings, like core's ``Environment``; a malformed value fails naming its variable)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.orm import Session

from conveyor.core import Settings


class PipelineEnvironment(BaseSettings):
    """The CONVEYOR_PIPELINE_* variables (and CONVEYOR_ARTIFACT_RETENTION_DAYS); empty counts as unset."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_PIPELINE_", env_ignore_empty=True, extra="ignore")

    workers: int = Field(default=2, ge=0)
    lease_seconds: int = Field(default=20, gt=0)
    max_log_mb: int = Field(default=10, gt=0)
    max_attempts: int = Field(default=2, gt=0)
    artifact_retention_days: int = Field(default=90, gt=0, validation_alias=AliasChoices(
        "CONVEYOR_ARTIFACT_RETENTION_DAYS"))
    poll_seconds: float = Field(default=0.5, gt=0)
    max_artifact_mb: int = Field(default=512, gt=0)
    default_image: str = "cache/debian-python:12"
    containers_root: Path | None = None


def pipeline_environment() -> PipelineEnvironment:
    try:
        return PipelineEnvironment()
    except ValidationError as exc:
        bad = ", ".join(f"{_variable(str(e['loc'][0]))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"bad environment variable ({bad})") from None


def _variable(field: str) -> str:
    return field.upper() if field.upper().startswith("CONVEYOR_") else f"CONVEYOR_PIPELINE_{field.upper()}"


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
        env = pipeline_environment()
        return cls(
            concurrency=env.workers,
            lease_seconds=env.lease_seconds,
            max_log_bytes=env.max_log_mb * 1024 * 1024,
            max_attempts=env.max_attempts,
            artifact_retention_days=env.artifact_retention_days,
            poll_interval=env.poll_seconds,
            max_artifact_bytes=env.max_artifact_mb * 1024 * 1024,
            default_image=env.default_image,
        )


def pipelines_dir(settings: Settings) -> Path:
    return settings.data_dir / "pipelines"


def workspaces_dir(settings: Settings) -> Path:
    return pipelines_dir(settings) / "workspaces"


def artifacts_dir(settings: Settings) -> Path:
    return pipelines_dir(settings) / "artifacts"


def containers_root(settings: Settings) -> Path:
    """The pipelines' own image storage (layer cache included), apart from the machine's shared one."""
    given = pipeline_environment().containers_root
    return given.expanduser() if given else pipelines_dir(settings) / "containers"


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
