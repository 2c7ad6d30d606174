"""forge: webhook deliveries keep the receiver's answer apart from the error users see

Revision ID: forge_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "forge_0003"
down_revision = "forge_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_response_excerpt', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_column('last_response_excerpt')
