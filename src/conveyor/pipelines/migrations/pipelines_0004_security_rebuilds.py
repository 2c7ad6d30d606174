"""pipelines: runs that rebuild for a security update (a base image moved), also when batched

Revision ID: pipelines_0004
Revises: pipelines_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "pipelines_0004"
down_revision = "pipelines_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline_runs") as b:
        b.add_column(sa.Column("security_update", sa.JSON(), nullable=True))
    with op.batch_alter_table("pipeline_cadence") as b:
        b.add_column(sa.Column("pending_security", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pipeline_cadence") as b:
        b.drop_column("pending_security")
    with op.batch_alter_table("pipeline_runs") as b:
        b.drop_column("security_update")
