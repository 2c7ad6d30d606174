"""forge: repositories, protection, pushes, pull requests, reviews, statuses, webhooks

Revision ID: forge_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.core.db

revision = "forge_0001"
down_revision = None
branch_labels = ("forge",)
depends_on = 'core_0001'


def upgrade() -> None:
    op.create_table('repositories',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('default_branch', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_repositories')),
    sa.UniqueConstraint('name', name=op.f('uq_repositories_name'))
    )

    op.create_table('branch_protections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repo_id', sa.Integer(), nullable=False),
    sa.Column('branch', sa.String(length=255), nullable=False),
    sa.Column('required_approvals', sa.Integer(), nullable=False),
    sa.Column('required_checks', sa.JSON(), nullable=False),
    sa.Column('approver_roles', sa.JSON(), nullable=False),
    sa.Column('no_self_approval', sa.Boolean(), nullable=False),
    sa.Column('updated_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['repo_id'], ['repositories.id'], name=op.f('fk_branch_protections_repo_id_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_branch_protections')),
    sa.UniqueConstraint('repo_id', 'branch', name=op.f('uq_branch_protections_repo_id'))
    )

    op.create_table('pushes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repo_id', sa.Integer(), nullable=False),
    sa.Column('push_id', sa.String(length=64), nullable=False),
    sa.Column('pusher', sa.String(length=64), nullable=False),
    sa.Column('updates', sa.JSON(), nullable=False),
    sa.Column('at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['repo_id'], ['repositories.id'], name=op.f('fk_pushes_repo_id_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pushes')),
    sa.UniqueConstraint('push_id', name=op.f('uq_pushes_push_id'))
    )
    with op.batch_alter_table('pushes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pushes_repo_id'), ['repo_id'], unique=False)

    op.create_table('pull_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repo_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('author', sa.String(length=64), nullable=False),
    sa.Column('source_branch', sa.String(length=255), nullable=False),
    sa.Column('target_branch', sa.String(length=255), nullable=False),
    sa.Column('head_sha', sa.String(length=64), nullable=False),
    sa.Column('base_sha', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('merge_method', sa.String(length=16), nullable=True),
    sa.Column('merge_commit_sha', sa.String(length=64), nullable=True),
    sa.Column('base_before_merge', sa.String(length=64), nullable=True),
    sa.Column('merged_by', sa.String(length=64), nullable=True),
    sa.Column('merged_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('reverts_number', sa.Integer(), nullable=True),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['repo_id'], ['repositories.id'], name=op.f('fk_pull_requests_repo_id_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pull_requests')),
    sa.UniqueConstraint('repo_id', 'number', name=op.f('uq_pull_requests_repo_id'))
    )
    with op.batch_alter_table('pull_requests', schema=None) as batch_op:
        batch_op.create_index('ix_pull_requests_source', ['repo_id', 'source_branch', 'state'], unique=False)

    op.create_table('reviews',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pr_id', sa.Integer(), nullable=False),
    sa.Column('reviewer', sa.String(length=64), nullable=False),
    sa.Column('reviewer_role', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('head_sha', sa.String(length=64), nullable=False),
    sa.Column('dismissed', sa.Boolean(), nullable=False),
    sa.Column('dismissed_reason', sa.String(length=200), nullable=True),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['pr_id'], ['pull_requests.id'], name=op.f('fk_reviews_pr_id_pull_requests'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reviews'))
    )
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reviews_pr_id'), ['pr_id'], unique=False)

    op.create_table('commit_statuses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repo_id', sa.Integer(), nullable=False),
    sa.Column('sha', sa.String(length=64), nullable=False),
    sa.Column('context', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('target_url', sa.String(length=2000), nullable=False),
    sa.Column('creator', sa.String(length=64), nullable=False),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['repo_id'], ['repositories.id'], name=op.f('fk_commit_statuses_repo_id_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_commit_statuses'))
    )
    with op.batch_alter_table('commit_statuses', schema=None) as batch_op:
        batch_op.create_index('ix_commit_statuses_sha', ['repo_id', 'sha'], unique=False)

    op.create_table('webhooks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repo_id', sa.Integer(), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('secret', sa.String(length=255), nullable=False),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['repo_id'], ['repositories.id'], name=op.f('fk_webhooks_repo_id_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhooks'))
    )
    with op.batch_alter_table('webhooks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhooks_repo_id'), ['repo_id'], unique=False)

    op.create_table('webhook_deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('hook_id', sa.Integer(), nullable=False),
    sa.Column('guid', sa.String(length=64), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=True),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['hook_id'], ['webhooks.id'], name=op.f('fk_webhook_deliveries_hook_id_webhooks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
    sa.UniqueConstraint('guid', name=op.f('uq_webhook_deliveries_guid'))
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_deliveries_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_webhook_deliveries_hook_id'), ['hook_id'], unique=False)


def downgrade() -> None:
    op.drop_table('webhook_deliveries')
    op.drop_table('webhooks')
    op.drop_table('commit_statuses')
    op.drop_table('reviews')
    op.drop_table('pull_requests')
    op.drop_table('pushes')
    op.drop_table('branch_protections')
    op.drop_table('repositories')
