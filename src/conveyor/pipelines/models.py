"""Pipeline tables: runs (the queue itself), their steps, stored logs, artifacts and secrets."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import false as sa_false

from conveyor.core.db import Base, UTCDateTime, utcnow

ACTIVE = ("queued", "running")
FINISHED = ("success", "failure", "error", "cancelled")


class SecretScope(StrEnum):
    """Which runs get a secret. By default only CI runs of protected branches (reviewed code)."""

    PROTECTED = "protected"
    ALL = "all"  # pull-request pipelines too: explicitly marked, as GitHub's/Azure's environment secrets


class Run(Base):
    """One execution of a repository's ``pr`` or ``ci`` pipeline at one commit.

    Queued rows are the queue: workers claim them with a lease (``lease_owner`` and
    ``lease_expires_at``) that they renew while the run executes; a run whose lease lapsed
    belonged to a worker that died.
    """

    __tablename__ = "pipeline_runs"
    __table_args__ = (
        UniqueConstraint("repo_id", "number", name="uq_pipeline_runs_repo_number"),
        UniqueConstraint("trigger_key", name="uq_pipeline_runs_trigger_key"),
        Index("ix_pipeline_runs_queue", "state", "queued_at"),
        Index("ix_pipeline_runs_commit", "repo_id", "sha", "pipeline"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    repo_name: Mapped[str] = mapped_column(String(100))
    number: Mapped[int] = mapped_column(Integer)  # the build number, per repository
    pipeline: Mapped[str] = mapped_column(String(16))  # pr | ci
    sha: Mapped[str] = mapped_column(String(40))
    ref: Mapped[str] = mapped_column(String(255), default="")
    pr_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    trigger: Mapped[str] = mapped_column(String(64))
    # Makes event handling idempotent: one run per (event, pipeline); NULL for manual runs.
    trigger_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    retry_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    failed_step: Mapped[str | None] = mapped_column(String(200), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_by: Mapped[str] = mapped_column(String(64), default="system")
    # What the run produced: image digest and tags, artifact digests.
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Every log chunk has a run-wide sequence number, allocated by the single executing worker.
    log_seq: Mapped[int] = mapped_column(Integer, default=0)
    # A CI run of a commit on the protected default branch: the only kind whose image may be pushed
    # and whose release delivery deploys. Manual runs of other refs are not.
    deployable: Mapped[bool] = mapped_column(default=False, server_default=sa_false())
    # runs-on: the labels a runner must have to claim it; and which runner claimed it.
    labels: Mapped[list[str]] = mapped_column(JSON, default=list)
    runner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The commits a batched CI run includes (oldest first); just `sha` for per-commit runs.
    commits: Mapped[list[str]] = mapped_column(JSON, default=list)
    # A rebuild for a security update (a base image got a new digest): {base, from, to, reason}.
    security_update: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    steps: Mapped[list[Step]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="Step.index"
    )


class Step(Base):
    __tablename__ = "pipeline_steps"
    __table_args__ = (UniqueConstraint("run_id", "index", name="uq_pipeline_steps_run_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # setup | run | uses
    state: Mapped[str] = mapped_column(String(16), default="pending")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The step's process group on its worker's host, so a restart can end what a crash left running.
    pgid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Names of the steps this one waits for (`needs:`); steps without run in file order.
    needs: Mapped[list[str]] = mapped_column(JSON, default=list)

    run: Mapped[Run] = relationship(back_populates="steps")


class LogChunk(Base):
    __tablename__ = "pipeline_log_chunks"
    __table_args__ = (UniqueConstraint("run_id", "seq", name="uq_pipeline_log_chunks_run_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    step_index: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Artifact(Base):
    """A published file, stored once by content digest; rows are never updated."""

    __tablename__ = "pipeline_artifacts"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_pipeline_artifacts_run_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True)
    repo_name: Mapped[str] = mapped_column(String(100), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    digest: Mapped[str] = mapped_column(String(80), index=True)
    size: Mapped[int] = mapped_column(Integer)
    media_type: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Secret(Base):
    """A repository's pipeline secret, encrypted with the server's key (never returned by the API)."""

    __tablename__ = "pipeline_secrets"
    __table_args__ = (UniqueConstraint("repo_id", "name", name="uq_pipeline_secrets_repo_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    scope: Mapped[str] = mapped_column(String(16), default=SecretScope.PROTECTED.value,
                                       server_default=SecretScope.PROTECTED.value)
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Runner(Base):
    """A registered runner: an identity (``runner-<name>``) that claims runs over the HTTP API."""

    __tablename__ = "pipeline_runners"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    labels: Mapped[list[str]] = mapped_column(JSON, default=list)
    repos: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every repository
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked: Mapped[bool] = mapped_column(default=False)


class CadenceState(Base):
    """CI at a cadence, per repository: merges collected since the last batched run, and the clock."""

    __tablename__ = "pipeline_cadence"

    repo_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True)
    pending_tip: Mapped[str | None] = mapped_column(String(40), nullable=True)
    pending_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    pending_ref: Mapped[str] = mapped_column(String(255), default="")
    pending_actor: Mapped[str] = mapped_column(String(64), default="")
    last_built: Mapped[str | None] = mapped_column(String(40), nullable=True)  # tip of the last batched run
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # schedule clock
    pending_security: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # a base-image update
