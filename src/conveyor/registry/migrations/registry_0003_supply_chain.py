"""registry: signing keys, image lineage, tag history and cache refresh policies

Revision ID: registry_0003
Revises: registry_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.core.db

revision = "registry_0003"
down_revision = "registry_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("registry_signing_keys",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("key_id", sa.String(length=80), nullable=False),
    sa.Column("public_pem", sa.Text(), nullable=False),
    sa.Column("private_ciphertext", sa.LargeBinary(), nullable=False),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("created_by", sa.String(length=64), nullable=False),
    sa.Column("created_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column("retired_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_signing_keys")),
    sa.UniqueConstraint("key_id", name=op.f("uq_registry_signing_keys_key_id"))
    )
    op.create_table("registry_lineage",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("repository", sa.String(length=255), nullable=False),
    sa.Column("digest", sa.String(length=160), nullable=False),
    sa.Column("base_name", sa.String(length=500), nullable=False),
    sa.Column("base_digest", sa.String(length=160), nullable=False),
    sa.Column("base_repository", sa.String(length=255), nullable=True),
    sa.Column("base_tag", sa.String(length=128), nullable=True),
    sa.Column("recorded_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_lineage")),
    sa.UniqueConstraint("repository", "digest", name=op.f("uq_registry_lineage_repository"))
    )
    op.create_index("ix_registry_lineage_base", "registry_lineage", ["base_repository", "base_tag"], unique=False)
    op.create_table("registry_tag_history",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("repository", sa.String(length=255), nullable=False),
    sa.Column("tag", sa.String(length=128), nullable=False),
    sa.Column("digest", sa.String(length=160), nullable=False),
    sa.Column("replaced_by", sa.String(length=160), nullable=False),
    sa.Column("replaced_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_tag_history"))
    )
    op.create_index("ix_registry_tag_history_tag", "registry_tag_history", ["repository", "tag"], unique=False)
    op.create_table("registry_refresh_policies",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("kind", sa.String(length=16), nullable=False),
    sa.Column("target", sa.String(length=255), nullable=False),
    sa.Column("source", sa.String(length=2000), nullable=True),
    sa.Column("username", sa.String(length=255), nullable=True),
    sa.Column("password", sa.Text(), nullable=True),
    sa.Column("insecure", sa.Boolean(), nullable=False),
    sa.Column("interval_seconds", sa.Integer(), nullable=False),
    sa.Column("tags", sa.JSON(), nullable=False),
    sa.Column("created_by", sa.String(length=64), nullable=False),
    sa.Column("created_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column("last_run_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column("last_ok_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column("failing_since", conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_refresh_policies")),
    sa.UniqueConstraint("target", name=op.f("uq_registry_refresh_policies_target"))
    )


def downgrade() -> None:
    op.drop_table("registry_refresh_policies")
    op.drop_index("ix_registry_tag_history_tag", table_name="registry_tag_history")
    op.drop_table("registry_tag_history")
    op.drop_index("ix_registry_lineage_base", table_name="registry_lineage")
    op.drop_table("registry_lineage")
    op.drop_table("registry_signing_keys")
