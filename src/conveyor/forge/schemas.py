"""Request and response bodies of the forge's REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from conveyor.core.limits import BodyText, NameText, SecretText, ShortText, TitleText, UrlText


class RepoCreate(BaseModel):
    name: NameText
    default_branch: NameText = "main"
    description: ShortText = ""
    # gitops: a repository of desired state, which every cluster agent may read (cluster-admin and up)
    kind: Literal["app", "gitops"] = "app"


class RepoOut(BaseModel):
    name: str
    default_branch: str
    description: str
    created_by: str
    created_at: datetime
    clone_url: str
    kind: str = "app"


class ProtectionIn(BaseModel):
    approvals: int = Field(default=0, ge=0, le=20)
    required_checks: list[NameText] = Field(default_factory=list, max_length=50)
    approver_roles: list[NameText] = Field(default_factory=list, max_length=10)
    no_self_approval: bool = False
    # PRs opened by anyone but these identities need `approvals_for_others` non-author approvals.
    trusted_openers: list[NameText] = Field(default_factory=list, max_length=20)
    approvals_for_others: int | None = Field(default=None, ge=1, le=20)


class ProtectionOut(ProtectionIn):
    branch: str


class PullCreate(BaseModel):
    source: NameText
    target: NameText
    title: TitleText
    body: BodyText = ""


class ReviewIn(BaseModel):
    state: Literal["approve", "request_changes", "comment"]
    body: BodyText = ""


class MergeIn(BaseModel):
    method: Literal["merge", "squash", "ff"] = "merge"


class ReviewOut(BaseModel):
    reviewer: str
    role: str
    state: str
    body: str
    head_sha: str
    dismissed: bool
    dismissed_reason: str | None
    created_at: datetime


class CommitOut(BaseModel):
    sha: str
    subject: str
    author: str
    opened_by: str = ""


class FileStatOut(BaseModel):
    path: str
    added: int | None
    deleted: int | None


class StatusIn(BaseModel):
    state: Literal["pending", "success", "failure", "error"]
    context: NameText = "default"
    description: ShortText = ""
    target_url: UrlText = ""


class StatusOut(BaseModel):
    context: str
    state: str
    description: str
    target_url: str
    creator: str
    updated_at: datetime


class CombinedStatusOut(BaseModel):
    sha: str
    state: str
    statuses: list[StatusOut]


class BlockerOut(BaseModel):
    rule: str
    message: str


class MergeabilityOut(BaseModel):
    mergeable: bool
    blockers: list[BlockerOut]
    approvals: list[str]
    required_approvals: int
    required_checks: list[str]
    conflicts: list[str]


class PullOut(BaseModel):
    number: int
    title: str
    # In listings at most LIST_BODY_CHARS characters (body_truncated says so); whole in the PR itself.
    body: str
    body_truncated: bool = False
    author: str
    source_branch: str
    target_branch: str
    head_sha: str
    base_sha: str
    state: str
    merge_method: str | None
    merge_commit_sha: str | None
    merged_by: str | None
    merged_at: datetime | None
    reverts_number: int | None
    created_at: datetime
    updated_at: datetime


class PullDetailOut(PullOut):
    commits: list[CommitOut]
    files: list[FileStatOut]
    reviews: list[ReviewOut]
    checks: CombinedStatusOut
    mergeability: MergeabilityOut


class HookIn(BaseModel):
    url: UrlText
    secret: SecretText
    events: list[NameText] = Field(default_factory=lambda: ["push", "pull_request", "status"], max_length=10)


class HookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    active: bool
    created_by: str
    created_at: datetime


class DeliveryOut(BaseModel):
    id: int
    guid: str
    event: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    # The receiver's response body (first 200 bytes): only for admins, null for everyone else.
    last_response_excerpt: str | None = None
    duration_ms: int | None
    created_at: datetime
    delivered_at: datetime | None


class BranchOut(BaseModel):
    name: str
    sha: str
    protected: bool
