"""Request and response bodies of the delivery API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from conveyor.core.limits import NameText


class GitopsInit(BaseModel):
    repo: NameText
    environments: dict[NameText, dict[str, Any]] | None = Field(default=None, max_length=50)


class FreezeIn(BaseModel):
    env: str | None = Field(default=None, description="One environment; none: every environment")
    reason: str = Field(min_length=1, max_length=2000)


class FreezeEndIn(BaseModel):
    env: str | None = None
    reason: str | None = None


class FreezeOut(BaseModel):
    id: int
    env: str | None
    reason: str
    started_by: str
    started_at: datetime
    ended_by: str | None
    ended_at: datetime | None


class ReasonIn(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class HoldOut(BaseModel):
    id: int
    app: str
    env: str
    reason: str
    created_by: str
    created_at: datetime
    released_by: str | None
    released_at: datetime | None
    release_reason: str | None


class PromoteIn(BaseModel):
    env: NameText
    version: NameText | None = None


class RollbackIn(BaseModel):
    env: NameText
    to: NameText | None = None


class EventOut(BaseModel):
    at: datetime
    kind: str
    message: str
    detail: dict[str, Any]


class PromotionOut(BaseModel):
    id: int
    app: str
    env: str
    version: str
    state: str
    image: str
    image_digest: str
    image_tag: str
    source_repo: str
    source_commit: str
    author: str
    ci_run: str | None
    gitops_repo: str
    pr_number: int | None
    merge_commit: str | None
    rollback_pr_number: int | None
    is_rollback: bool
    failure_reason: str | None
    started_by: str | None = None
    override_by: str | None = None
    override_reason: str | None = None
    risk: list[dict[str, str]] = []
    security_update: str | None = None  # a rebuild because its base image changed
    extra_approvals: int = 0
    created_at: datetime
    finished_at: datetime | None
    events: list[EventOut] = []


class EnvStatusOut(BaseModel):
    env: str
    cluster: str
    version: str | None
    commit: str | None
    image_digest: str | None
    state: str | None
    pending: PromotionOut | None
    lead_time_seconds: float | None
    frozen: str | None = None
    upcoming_freeze: str | None = None
    held: str | None = None


class DoraOut(BaseModel):
    app: str
    env: str
    window_days: int
    deployments: int
    deployment_frequency_per_day: float
    lead_time_seconds: float | None
    change_failure_rate: float | None
    time_to_restore_seconds: float | None
