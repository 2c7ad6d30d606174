"""clusters: registrations (agent identity, agent kind, Kubernetes version)

Revision ID: clusters_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.core.db

revision = "clusters_0001"
down_revision = None
branch_labels = ("clusters",)
depends_on = "core_0002"


def upgrade() -> None:
    op.create_table("clusters",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=20), nullable=False),
    sa.Column("agent", sa.String(length=16), nullable=False),
    sa.Column("kubernetes_version", sa.String(length=32), nullable=False),
    sa.Column("created_by", sa.String(length=64), nullable=False),
    sa.Column("created_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_clusters")),
    sa.UniqueConstraint("name", name=op.f("uq_clusters_name"))
    )


def downgrade() -> None:
    op.drop_table("clusters")
