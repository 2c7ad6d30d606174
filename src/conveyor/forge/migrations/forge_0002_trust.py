"""forge: repository kinds, PR provenance, approvals for PRs not opened by a trusted identity

Revision ID: forge_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "forge_0002"
down_revision = "forge_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("repositories") as b:
        b.add_column(sa.Column("kind", sa.String(length=16), server_default="app", nullable=False))
    with op.batch_alter_table("pull_requests") as b:
        b.add_column(sa.Column("opened_by", sa.String(length=64), server_default="", nullable=False))
    with op.batch_alter_table("branch_protections") as b:
        b.add_column(sa.Column("trusted_openers", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
        b.add_column(sa.Column("approvals_for_others", sa.Integer(), nullable=True))
    op.execute("UPDATE pull_requests SET opened_by = author")


def downgrade() -> None:
    with op.batch_alter_table("branch_protections") as b:
        b.drop_column("approvals_for_others")
        b.drop_column("trusted_openers")
    with op.batch_alter_table("pull_requests") as b:
        b.drop_column("opened_by")
    with op.batch_alter_table("repositories") as b:
        b.drop_column("kind")
