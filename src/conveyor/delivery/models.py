"""Delivery tables: apps, promotions (one app version into one environment) and their timelines."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from conveyor.core.db import Base, UTCDateTime, utcnow
from conveyor.delivery.states import PromotionState


class StateColumn(TypeDecorator[PromotionState]):
    """A promotion state stored as its string (the column stays VARCHAR(20)), read back as the enum."""

    impl = String(20)
    cache_ok = True

    def process_bind_param(self, value: PromotionState | str | None, dialect: Dialect) -> str | None:
        return None if value is None else PromotionState(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> PromotionState | None:
        return None if value is None else PromotionState(value)


class App(Base):
    __tablename__ = "delivery_apps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    source_repo: Mapped[str] = mapped_column(String(100))
    gitops_repo: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Promotion(Base):
    __tablename__ = "promotions"
    __table_args__ = (Index("ix_promotions_app_env", "app", "env", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app: Mapped[str] = mapped_column(String(100))
    env: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(128))
    state: Mapped[PromotionState] = mapped_column(StateColumn(), default=PromotionState.PENDING)
    # What is being deployed.
    source_repo: Mapped[str] = mapped_column(String(100))
    source_commit: Mapped[str] = mapped_column(String(64))
    source_committed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    author: Mapped[str] = mapped_column(String(64))
    ci_run: Mapped[str | None] = mapped_column(String(64), nullable=True)
    image: Mapped[str] = mapped_column(String(500))
    image_digest: Mapped[str] = mapped_column(String(100))
    image_tag: Mapped[str] = mapped_column(String(200))
    templates_artifact: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # Where it is in the GitOps repo.
    gitops_repo: Mapped[str] = mapped_column(String(100))
    deploy_branch: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pr_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    merge_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    applied_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rollback_pr_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rollback_merge_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    is_rollback: Mapped[bool] = mapped_column(default=False)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    promoted_from: Mapped[int | None] = mapped_column(ForeignKey("promotions.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # When the state last changed: deadlines (merge, apply, verify) count from here.
    state_since: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Governance (issue 17). Who started it by hand (None: automatic, from CI or a verified environment).
    started_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A freeze window let through once, by whom and why.
    override_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    override_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Risk rules that asked for extra approvals: [{"rule": ..., "reason": ...}], and how many.
    risk: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    extra_approvals: Mapped[int] = mapped_column(Integer, default=0)
    soak_restarts: Mapped[int | None] = mapped_column(Integer, nullable=True)  # restarts when the soak began
    # The release is a rebuild for a security update (its CI run's ``security_update``): why.
    security_update: Mapped[str | None] = mapped_column(Text, nullable=True)

    events: Mapped[list[PromotionEvent]] = relationship(
        back_populates="promotion", order_by="PromotionEvent.id", cascade="all, delete-orphan"
    )


class PromotionEvent(Base):
    __tablename__ = "promotion_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    promotion_id: Mapped[int] = mapped_column(ForeignKey("promotions.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    promotion: Mapped[Promotion] = relationship(back_populates="events")


class GitopsRepo(Base):
    """A forge repository that holds desired state: environments on main, one branch per environment."""

    __tablename__ = "gitops_repos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Freeze(Base):
    """The stop switch: while a row is active, no new merge into the environment's branch (every
    environment when ``env`` is None), across apps, until someone ends it."""

    __tablename__ = "delivery_freezes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    env: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    started_by: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Hold(Base):
    """Automatic promotions of an app into an environment are paused until someone releases it."""

    __tablename__ = "delivery_holds"
    __table_args__ = (Index("ix_delivery_holds_app_env", "app", "env"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app: Mapped[str] = mapped_column(String(100))
    env: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    promotion_id: Mapped[int | None] = mapped_column(ForeignKey("promotions.id"), nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    released_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    release_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class BadVersion(Base):
    """A version that failed in an environment and was rolled back: never promoted automatically again."""

    __tablename__ = "delivery_bad_versions"
    __table_args__ = (UniqueConstraint("app", "version", name="uq_delivery_bad_versions_app_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    promotion_id: Mapped[int | None] = mapped_column(ForeignKey("promotions.id"), nullable=True)
    marked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
