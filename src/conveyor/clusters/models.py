"""The clusters the server knows: what delivery deploys to and whose agent may report.

A local cluster is still its directory (``spec.py``); this table is the *registration* that
binds a cluster name to an agent identity, its agent kind and its Kubernetes version, for local
and external clusters alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.core.db import Base, UTCDateTime, utcnow


class RegisteredCluster(Base):
    __tablename__ = "clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20), unique=True)
    agent: Mapped[str] = mapped_column(String(16), default="conveyor")  # AgentKind: conveyor | flux
    kubernetes_version: Mapped[str] = mapped_column(String(32), default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The key notification-controller's generic-hmac Provider signs events with (X-Signature).
    # Kept in clear like webhook secrets: verifying an HMAC needs the key itself.
    flux_hmac_key: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None)
    # The public half (age1...) of the cluster's age key: what application secrets are encrypted to.
    # The private half exists only in the cluster (agent/agekey.py); the server never sees it.
    age_recipient: Mapped[str | None] = mapped_column(String(100), nullable=True, default=None)


class FluxReport(Base):
    """What Flux last said about one of its objects on a cluster (one row per object, overwritten)."""

    __tablename__ = "flux_reports"
    __table_args__ = (UniqueConstraint("cluster", "kind", "namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster: Mapped[str] = mapped_column(String(20), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    namespace: Mapped[str] = mapped_column(String(253))
    name: Mapped[str] = mapped_column(String(253))
    controller: Mapped[str] = mapped_column(String(64), default="")
    severity: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    revision: Mapped[str] = mapped_column(String(300), default="")
    outcome: Mapped[str] = mapped_column(String(300), default="")  # what Conveyor made of it
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AgentReport(Base):
    """What a cluster's Conveyor agent last reported about itself (its /status document: each sync's
    state, inventory and recent events), pushed by the agent so no one has to configure its URL."""

    __tablename__ = "cluster_agent_reports"

    cluster: Mapped[str] = mapped_column(String(20), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
