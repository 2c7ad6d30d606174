"""core: server-wide settings (the outbound allow-list)

Revision ID: core_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.core.db

revision = "core_0002"
down_revision = "core_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('core_settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=False),
    sa.Column('updated_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_core_settings'))
    )


def downgrade() -> None:
    op.drop_table('core_settings')
