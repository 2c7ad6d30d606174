"""clusters: Flux as the agent (HMAC key of generic-hmac events, last report per Flux object)

Revision ID: clusters_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.core.db

revision = "clusters_0002"
down_revision = "clusters_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as b:
        b.add_column(sa.Column("flux_hmac_key", sa.String(length=128), nullable=True))
    op.create_table("flux_reports",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("cluster", sa.String(length=20), nullable=False),
    sa.Column("kind", sa.String(length=64), nullable=False),
    sa.Column("namespace", sa.String(length=253), nullable=False),
    sa.Column("name", sa.String(length=253), nullable=False),
    sa.Column("controller", sa.String(length=64), nullable=False),
    sa.Column("severity", sa.String(length=16), nullable=False),
    sa.Column("reason", sa.String(length=128), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("revision", sa.String(length=300), nullable=False),
    sa.Column("outcome", sa.String(length=300), nullable=False),
    sa.Column("reported_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_flux_reports")),
    sa.UniqueConstraint("cluster", "kind", "namespace", "name", name=op.f("uq_flux_reports_cluster")),
    )
    op.create_index(op.f("ix_flux_reports_cluster"), "flux_reports", ["cluster"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_flux_reports_cluster"), table_name="flux_reports")
    op.drop_table("flux_reports")
    with op.batch_alter_table("clusters") as b:
        b.drop_column("flux_hmac_key")
