"""pipelines: the process group of a running step

Revision ID: pipelines_0002
Revises: pipelines_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "pipelines_0002"
down_revision = "pipelines_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline_steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pgid", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pipeline_steps", schema=None) as batch_op:
        batch_op.drop_column("pgid")
