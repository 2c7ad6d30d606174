"""clusters: the public age key of each cluster (application secrets are encrypted to it)

Revision ID: clusters_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "clusters_0003"
down_revision = "clusters_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as b:
        b.add_column(sa.Column("age_recipient", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clusters") as b:
        b.drop_column("age_recipient")
