"""The clusters the server knows: what delivery deploys to and whose agent may report.

A local cluster is still its directory (``spec.py``); this table is the *registration* that
binds a cluster name to an agent identity, its agent kind and its Kubernetes version, for local
and external clusters alike.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.core.db import Base, UTCDateTime, utcnow


class RegisteredCluster(Base):
    __tablename__ = "clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20), unique=True)
    agent: Mapped[str] = mapped_column(String(16), default="conveyor")  # conveyor | flux
    kubernetes_version: Mapped[str] = mapped_column(String(32), default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
