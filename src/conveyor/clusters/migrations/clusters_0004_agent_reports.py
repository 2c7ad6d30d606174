"""clusters: what each cluster's agent last reported about itself

Revision ID: clusters_0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.core.db import UTCDateTime

revision = "clusters_0004"
down_revision = "clusters_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_agent_reports",
        sa.Column("cluster", sa.String(length=20), primary_key=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cluster_agent_reports")
