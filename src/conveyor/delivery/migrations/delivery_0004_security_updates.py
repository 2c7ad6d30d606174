"""delivery: promotions of releases that are security updates (a base image's new digest)

Revision ID: delivery_0004
Revises: delivery_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "delivery_0004"
down_revision = "delivery_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("promotions") as b:
        b.add_column(sa.Column("security_update", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("promotions") as b:
        b.drop_column("security_update")
