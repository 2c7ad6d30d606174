"""core: shared settings, identity kinds, narrowed tokens, token expiry and revocation

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
    op.create_table("core_settings",
    sa.Column("key", sa.String(length=64), nullable=False),
    sa.Column("value", sa.JSON(), nullable=False),
    sa.Column("updated_by", sa.String(length=64), nullable=False),
    sa.Column("updated_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("key", name=op.f("pk_core_settings"))
    )
    with op.batch_alter_table("users") as b:
        b.add_column(sa.Column("kind", sa.String(length=16), server_default="person", nullable=False))
    with op.batch_alter_table("api_tokens") as b:
        b.add_column(sa.Column("scope", sa.JSON(none_as_null=True), nullable=True))
        b.add_column(sa.Column("expires_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("revoked_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("revoked_by", sa.String(length=64), nullable=True))
    with op.batch_alter_table("event_deliveries") as b:
        b.add_column(sa.Column("failed", sa.Boolean(), server_default=sa.false(), nullable=False))
    # Identities made before kinds existed: Conveyor's services and the demo's agents.
    op.execute("UPDATE users SET kind = 'service' WHERE name LIKE 'conveyor-%'")
    op.execute("UPDATE users SET kind = 'agent' WHERE name LIKE 'agent-%'")


def downgrade() -> None:
    with op.batch_alter_table("event_deliveries") as b:
        b.drop_column("failed")
    with op.batch_alter_table("api_tokens") as b:
        for col in ("revoked_by", "revoked_at", "expires_at", "scope"):
            b.drop_column(col)
    with op.batch_alter_table("users") as b:
        b.drop_column("kind")
    op.drop_table("core_settings")
