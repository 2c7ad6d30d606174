"""Forge tables: repositories, branch protection, pushes, pull requests, reviews, statuses, webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from conveyor.core.db import Base, UTCDateTime, utcnow


class Repository(Base):
    __tablename__ = "repositories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # app | gitops: agents' tokens read every gitops repository and nothing else
    kind: Mapped[str] = mapped_column(String(16), default="app", server_default="app")
    default_branch: Mapped[str] = mapped_column(String(255), default="main")
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    protections: Mapped[list[BranchProtection]] = relationship(
        back_populates="repo", cascade="all, delete-orphan", passive_deletes=True
    )


class BranchProtection(Base):
    __tablename__ = "branch_protections"
    __table_args__ = (UniqueConstraint("repo_id", "branch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    branch: Mapped[str] = mapped_column(String(255))
    required_approvals: Mapped[int] = mapped_column(Integer, default=0)
    required_checks: Mapped[list[str]] = mapped_column(JSON, default=list)
    approver_roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    no_self_approval: Mapped[bool] = mapped_column(default=False)
    # PRs opened by these identities need `required_approvals`; when `approvals_for_others` is set,
    # every other PR needs that many approvals from people other than its author (GitOps
    # environment branches: only delivery's own PRs may merge without a second person).
    trusted_openers: Mapped[list[str]] = mapped_column(JSON, default=list)
    approvals_for_others: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    repo: Mapped[Repository] = relationship(back_populates="protections")


class Push(Base):
    """One accepted push (or merge), recorded once: ``push_id`` makes replays idempotent."""

    __tablename__ = "pushes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"), index=True)
    push_id: Mapped[str] = mapped_column(String(64), unique=True)
    pusher: Mapped[str] = mapped_column(String(64))
    updates: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PullRequest(Base):
    __tablename__ = "pull_requests"
    __table_args__ = (
        UniqueConstraint("repo_id", "number"),
        Index("ix_pull_requests_source", "repo_id", "source_branch", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(64))
    # Who created the PR: the author, or the service that opened it on the author's behalf (delivery).
    opened_by: Mapped[str] = mapped_column(String(64), default="", server_default="")
    source_branch: Mapped[str] = mapped_column(String(255))
    target_branch: Mapped[str] = mapped_column(String(255))
    head_sha: Mapped[str] = mapped_column(String(64))
    base_sha: Mapped[str] = mapped_column(String(64))
    # open -> merging -> merged, or open -> closed. "merging" is the intent record that lets a
    # restart finish or undo a merge interrupted between the ref update and the DB update.
    state: Mapped[str] = mapped_column(String(16), default="open")
    merge_method: Mapped[str | None] = mapped_column(String(16), nullable=True)
    merge_commit_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    base_before_merge: Mapped[str | None] = mapped_column(String(64), nullable=True)
    merged_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    merged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reverts_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    repo: Mapped[Repository] = relationship()
    reviews: Mapped[list[Review]] = relationship(
        back_populates="pr", cascade="all, delete-orphan", order_by="Review.id", passive_deletes=True
    )


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pr_id: Mapped[int] = mapped_column(ForeignKey("pull_requests.id", ondelete="CASCADE"), index=True)
    reviewer: Mapped[str] = mapped_column(String(64))
    reviewer_role: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(20))  # approved | changes_requested | commented
    body: Mapped[str] = mapped_column(Text, default="")
    head_sha: Mapped[str] = mapped_column(String(64))
    dismissed: Mapped[bool] = mapped_column(default=False)
    dismissed_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    pr: Mapped[PullRequest] = relationship(back_populates="reviews")


class CommitStatus(Base):
    __tablename__ = "commit_statuses"
    __table_args__ = (Index("ix_commit_statuses_sha", "repo_id", "sha"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    sha: Mapped[str] = mapped_column(String(64))
    context: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(1000), default="")
    target_url: Mapped[str] = mapped_column(String(2000), default="")
    creator: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(255))
    events: Mapped[list[str]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    guid: Mapped[str] = mapped_column(String(64), unique=True)
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The first bytes of the receiver's answer: shown to admins only (it may be an internal page).
    last_response_excerpt: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
