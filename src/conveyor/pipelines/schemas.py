"""API shapes of the pipelines component."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from conveyor.core.limits import NameText


class StepOut(BaseModel):
    index: int
    name: str
    kind: str
    state: str
    exit_code: int | None
    message: str
    started_at: datetime | None
    finished_at: datetime | None
    needs: list[str] = []


class ArtifactOut(BaseModel):
    name: str
    kind: str
    digest: str
    size: int
    media_type: str
    created_at: datetime
    expires_at: datetime | None
    url: str


class RunOut(BaseModel):
    id: int
    repo: str
    number: int
    pipeline: str
    sha: str
    ref: str
    pr_number: int | None
    trigger: str
    retry_of: int | None
    state: str
    failed_step: str | None
    message: str
    attempt: int
    cancel_requested: bool
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    created_by: str
    outputs: dict[str, Any]
    url: str
    deployable: bool = False  # a CI run of the protected default branch: the only kind delivery deploys
    runner: str | None = None
    labels: list[str] = []
    commits: list[str] = []
    security_update: dict[str, Any] | None = None  # a rebuild because a base image got a new digest


class RunDetailOut(RunOut):
    steps: list[StepOut]
    artifacts: list[ArtifactOut]


class RunCreate(BaseModel):
    pipeline: Literal["pr", "ci"]
    ref: NameText | None = Field(default=None, description="A branch name; default: the repository's default branch")
    sha: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")


class ChunkOut(BaseModel):
    seq: int
    step: int
    text: str


class LogOut(BaseModel):
    run_id: int
    state: str
    chunks: list[ChunkOut]
    next: int  # pass as ?after= to continue
    finished: bool


class SecretIn(BaseModel):
    value: str = Field(min_length=1, max_length=65536)
    # protected (default): CI runs of protected branches only; all: pull-request pipelines too
    scope: Literal["protected", "all"] = "protected"


class SecretOut(BaseModel):
    name: str
    scope: str
