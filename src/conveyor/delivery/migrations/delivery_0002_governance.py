"""delivery: governance (issue 17): stop switch, holds, bad versions; who started a promotion,
freeze overrides, risk rules and soak baselines on promotions

Revision ID: delivery_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.core.db

revision = "delivery_0002"
down_revision = "delivery_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('promotions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('started_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('override_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('override_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('risk', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('extra_approvals', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('soak_restarts', sa.Integer(), nullable=True))
    with op.batch_alter_table('promotions', schema=None) as batch_op:
        batch_op.alter_column('risk', server_default=None)
        batch_op.alter_column('extra_approvals', server_default=None)

    op.create_table('delivery_freezes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('env', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('started_by', sa.String(length=64), nullable=False),
    sa.Column('started_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ended_by', sa.String(length=64), nullable=True),
    sa.Column('ended_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_freezes'))
    )
    op.create_table('delivery_holds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('app', sa.String(length=100), nullable=False),
    sa.Column('env', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('promotion_id', sa.Integer(), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('released_by', sa.String(length=64), nullable=True),
    sa.Column('released_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('release_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['promotion_id'], ['promotions.id'], name=op.f('fk_delivery_holds_promotion_id_promotions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_holds'))
    )
    with op.batch_alter_table('delivery_holds', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_holds_app_env', ['app', 'env'], unique=False)
    op.create_table('delivery_bad_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('app', sa.String(length=100), nullable=False),
    sa.Column('version', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('promotion_id', sa.Integer(), nullable=True),
    sa.Column('marked_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['promotion_id'], ['promotions.id'], name=op.f('fk_delivery_bad_versions_promotion_id_promotions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_bad_versions')),
    sa.UniqueConstraint('app', 'version', name='uq_delivery_bad_versions_app_version')
    )


def downgrade() -> None:
    op.drop_table('delivery_bad_versions')
    op.drop_table('delivery_holds')
    op.drop_table('delivery_freezes')
    with op.batch_alter_table('promotions', schema=None) as batch_op:
        for column in ('soak_restarts', 'extra_approvals', 'risk', 'override_reason', 'override_by', 'started_by'):
            batch_op.drop_column(column)
