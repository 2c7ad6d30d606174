"""registry: repositories, blobs, manifests, tags, policies, upstreams

Revision ID: registry_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.core.db

revision = "registry_0001"
down_revision = None
branch_labels = ("registry",)
depends_on = 'core_0001'


def upgrade() -> None:
    op.create_table('registry_anonymous_prefixes',
    sa.Column('prefix', sa.String(length=255), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('prefix', name=op.f('pk_registry_anonymous_prefixes'))
    )
    op.create_table('registry_blobs',
    sa.Column('digest', sa.String(length=160), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('digest', name=op.f('pk_registry_blobs'))
    )
    with op.batch_alter_table('registry_blobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_registry_blobs_last_used_at'), ['last_used_at'], unique=False)

    op.create_table('registry_immutable_tags',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repository', sa.String(length=255), nullable=False),
    sa.Column('pattern', sa.String(length=128), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_immutable_tags')),
    sa.UniqueConstraint('repository', 'pattern', name=op.f('uq_registry_immutable_tags_repository'))
    )
    op.create_table('registry_repositories',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_repositories')),
    sa.UniqueConstraint('name', name=op.f('uq_registry_repositories_name'))
    )
    op.create_table('registry_settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_registry_settings'))
    )
    op.create_table('registry_upstreams',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prefix', sa.String(length=255), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('username', sa.String(length=255), nullable=True),
    sa.Column('password', sa.Text(), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_upstreams')),
    sa.UniqueConstraint('prefix', name=op.f('uq_registry_upstreams_prefix'))
    )
    op.create_table('registry_manifests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repo_id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=160), nullable=False),
    sa.Column('media_type', sa.String(length=255), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('artifact_type', sa.String(length=255), nullable=True),
    sa.Column('subject_digest', sa.String(length=160), nullable=True),
    sa.Column('annotations', sa.JSON(), nullable=True),
    sa.Column('pushed_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['repo_id'], ['registry_repositories.id'], name=op.f('fk_registry_manifests_repo_id_registry_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_manifests')),
    sa.UniqueConstraint('repo_id', 'digest', name=op.f('uq_registry_manifests_repo_id'))
    )
    with op.batch_alter_table('registry_manifests', schema=None) as batch_op:
        batch_op.create_index('ix_registry_manifests_subject', ['repo_id', 'subject_digest'], unique=False)

    op.create_table('registry_repository_blobs',
    sa.Column('repo_id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=160), nullable=False),
    sa.Column('created_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['digest'], ['registry_blobs.digest'], name=op.f('fk_registry_repository_blobs_digest_registry_blobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['repo_id'], ['registry_repositories.id'], name=op.f('fk_registry_repository_blobs_repo_id_registry_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('repo_id', 'digest', name=op.f('pk_registry_repository_blobs'))
    )
    with op.batch_alter_table('registry_repository_blobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_registry_repository_blobs_digest'), ['digest'], unique=False)

    op.create_table('registry_manifest_refs',
    sa.Column('manifest_id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=160), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.ForeignKeyConstraint(['manifest_id'], ['registry_manifests.id'], name=op.f('fk_registry_manifest_refs_manifest_id_registry_manifests'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('manifest_id', 'digest', 'kind', name=op.f('pk_registry_manifest_refs'))
    )
    with op.batch_alter_table('registry_manifest_refs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_registry_manifest_refs_digest'), ['digest'], unique=False)

    op.create_table('registry_tags',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repo_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('manifest_id', sa.Integer(), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=False),
    sa.Column('updated_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('locked', sa.Boolean(), nullable=False),
    sa.Column('locked_by', sa.String(length=64), nullable=True),
    sa.Column('locked_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('checked_at', conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['manifest_id'], ['registry_manifests.id'], name=op.f('fk_registry_tags_manifest_id_registry_manifests'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['repo_id'], ['registry_repositories.id'], name=op.f('fk_registry_tags_repo_id_registry_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_tags')),
    sa.UniqueConstraint('repo_id', 'name', name=op.f('uq_registry_tags_repo_id'))
    )
    with op.batch_alter_table('registry_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_registry_tags_manifest_id'), ['manifest_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('registry_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_registry_tags_manifest_id'))

    op.drop_table('registry_tags')
    with op.batch_alter_table('registry_manifest_refs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_registry_manifest_refs_digest'))

    op.drop_table('registry_manifest_refs')
    with op.batch_alter_table('registry_repository_blobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_registry_repository_blobs_digest'))

    op.drop_table('registry_repository_blobs')
    with op.batch_alter_table('registry_manifests', schema=None) as batch_op:
        batch_op.drop_index('ix_registry_manifests_subject')

    op.drop_table('registry_manifests')
    op.drop_table('registry_upstreams')
    op.drop_table('registry_settings')
    op.drop_table('registry_repositories')
    op.drop_table('registry_immutable_tags')
    with op.batch_alter_table('registry_blobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_registry_blobs_last_used_at'))

    op.drop_table('registry_blobs')
    op.drop_table('registry_anonymous_prefixes')
