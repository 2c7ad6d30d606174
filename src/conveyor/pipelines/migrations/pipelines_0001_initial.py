"""pipelines: runs, steps, logs, artifacts, secrets

Revision ID: pipelines_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.core.db

revision = 'pipelines_0001'
down_revision = None
branch_labels = ('pipelines',)
depends_on = 'forge_0001'


def upgrade() -> None:
    op.create_table('pipeline_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repo_id', sa.Integer(), nullable=False),
    sa.Column('repo_name', sa.String(length=100), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('pipeline', sa.String(length=16), nullable=False),
    sa.Column('sha', sa.String(length=40), nullable=False),
    sa.Column('ref', sa.String(length=255), nullable=False),
    sa.Column('pr_number', sa.Integer(), nullable=True),
    sa.Column('trigger', sa.String(length=64), nullable=False),
    sa.Column('trigger_key', sa.String(length=128), nullable=True),
    sa.Column('retry_of', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('failed_step', sa.String(length=200), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('lease_owner', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('queued_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('started_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('outputs', sa.JSON(), nullable=False),
    sa.Column('log_seq', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['repo_id'], ['repositories.id'], name=op.f('fk_pipeline_runs_repo_id_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pipeline_runs')),
    sa.UniqueConstraint('repo_id', 'number', name='uq_pipeline_runs_repo_number'),
    sa.UniqueConstraint('trigger_key', name='uq_pipeline_runs_trigger_key')
    )
    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.create_index('ix_pipeline_runs_commit', ['repo_id', 'sha', 'pipeline'], unique=False)
        batch_op.create_index('ix_pipeline_runs_queue', ['state', 'queued_at'], unique=False)

    op.create_table('pipeline_secrets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repo_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=False),
    sa.Column('updated_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['repo_id'], ['repositories.id'], name=op.f('fk_pipeline_secrets_repo_id_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pipeline_secrets')),
    sa.UniqueConstraint('repo_id', 'name', name='uq_pipeline_secrets_repo_name')
    )
    op.create_table('pipeline_artifacts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('repo_name', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('digest', sa.String(length=80), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('media_type', sa.String(length=100), nullable=False),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['pipeline_runs.id'], name=op.f('fk_pipeline_artifacts_run_id_pipeline_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pipeline_artifacts')),
    sa.UniqueConstraint('run_id', 'name', name='uq_pipeline_artifacts_run_name')
    )
    with op.batch_alter_table('pipeline_artifacts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pipeline_artifacts_digest'), ['digest'], unique=False)
        batch_op.create_index(batch_op.f('ix_pipeline_artifacts_repo_name'), ['repo_name'], unique=False)
        batch_op.create_index(batch_op.f('ix_pipeline_artifacts_run_id'), ['run_id'], unique=False)

    op.create_table('pipeline_log_chunks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('step_index', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['pipeline_runs.id'], name=op.f('fk_pipeline_log_chunks_run_id_pipeline_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pipeline_log_chunks')),
    sa.UniqueConstraint('run_id', 'seq', name='uq_pipeline_log_chunks_run_seq')
    )
    op.create_table('pipeline_steps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('started_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['pipeline_runs.id'], name=op.f('fk_pipeline_steps_run_id_pipeline_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pipeline_steps')),
    sa.UniqueConstraint('run_id', 'index', name='uq_pipeline_steps_run_index')
    )
    with op.batch_alter_table('pipeline_steps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pipeline_steps_run_id'), ['run_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('pipeline_steps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pipeline_steps_run_id'))

    op.drop_table('pipeline_steps')
    op.drop_table('pipeline_log_chunks')
    with op.batch_alter_table('pipeline_artifacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pipeline_artifacts_run_id'))
        batch_op.drop_index(batch_op.f('ix_pipeline_artifacts_repo_name'))
        batch_op.drop_index(batch_op.f('ix_pipeline_artifacts_digest'))

    op.drop_table('pipeline_artifacts')
    op.drop_table('pipeline_secrets')
    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_pipeline_runs_queue')
        batch_op.drop_index('ix_pipeline_runs_commit')

    op.drop_table('pipeline_runs')
