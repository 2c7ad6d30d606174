"""delivery: mark existing GitOps repositories as such in the forge (agents read exactly those)

Revision ID: delivery_0003
"""

from __future__ import annotations

from alembic import op

revision = "delivery_0003"
down_revision = "delivery_0002"
branch_labels = None
depends_on = "forge_0002"


def upgrade() -> None:
    op.execute("UPDATE repositories SET kind = 'gitops' WHERE name IN (SELECT name FROM gitops_repos)")


def downgrade() -> None:
    pass
