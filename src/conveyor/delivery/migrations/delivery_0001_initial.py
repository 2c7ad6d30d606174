"""delivery: GitOps repositories, apps, promotions and their timelines

Revision ID: delivery_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.core.db

revision = "delivery_0001"
down_revision = None
branch_labels = ("delivery",)
depends_on = "core_0001"


def upgrade() -> None:
    op.create_table('gitops_repos',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gitops_repos')),
    sa.UniqueConstraint('name', name=op.f('uq_gitops_repos_name'))
    )

    op.create_table('delivery_apps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('source_repo', sa.String(length=100), nullable=False),
    sa.Column('gitops_repo', sa.String(length=100), nullable=False),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_apps')),
    sa.UniqueConstraint('name', name=op.f('uq_delivery_apps_name'))
    )

    op.create_table('promotions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('app', sa.String(length=100), nullable=False),
    sa.Column('env', sa.String(length=64), nullable=False),
    sa.Column('version', sa.String(length=128), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('source_repo', sa.String(length=100), nullable=False),
    sa.Column('source_commit', sa.String(length=64), nullable=False),
    sa.Column('source_committed_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('author', sa.String(length=64), nullable=False),
    sa.Column('ci_run', sa.String(length=64), nullable=True),
    sa.Column('image', sa.String(length=500), nullable=False),
    sa.Column('image_digest', sa.String(length=100), nullable=False),
    sa.Column('image_tag', sa.String(length=200), nullable=False),
    sa.Column('templates_artifact', sa.String(length=100), nullable=True),
    sa.Column('gitops_repo', sa.String(length=100), nullable=False),
    sa.Column('deploy_branch', sa.String(length=255), nullable=True),
    sa.Column('pr_number', sa.Integer(), nullable=True),
    sa.Column('merge_commit', sa.String(length=64), nullable=True),
    sa.Column('applied_commit', sa.String(length=64), nullable=True),
    sa.Column('rollback_pr_number', sa.Integer(), nullable=True),
    sa.Column('rollback_merge_commit', sa.String(length=64), nullable=True),
    sa.Column('is_rollback', sa.Boolean(), nullable=False),
    sa.Column('failure_reason', sa.Text(), nullable=True),
    sa.Column('promoted_from', sa.Integer(), nullable=True),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('state_since', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('failed_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['promoted_from'], ['promotions.id'], name=op.f('fk_promotions_promoted_from_promotions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_promotions'))
    )
    with op.batch_alter_table('promotions', schema=None) as batch_op:
        batch_op.create_index('ix_promotions_app_env', ['app', 'env', 'state'], unique=False)

    op.create_table('promotion_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('promotion_id', sa.Integer(), nullable=False),
    sa.Column('at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['promotion_id'], ['promotions.id'], name=op.f('fk_promotion_events_promotion_id_promotions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_promotion_events'))
    )
    with op.batch_alter_table('promotion_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_promotion_events_promotion_id'), ['promotion_id'], unique=False)


def downgrade() -> None:
    op.drop_table('promotion_events')
    op.drop_table('promotions')
    op.drop_table('delivery_apps')
    op.drop_table('gitops_repos')
