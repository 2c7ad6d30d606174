"""registry: apps/<app> repositories bound to the source repository whose CI pushes them

Revision ID: registry_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.core.db

revision = "registry_0002"
down_revision = "registry_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("registry_app_bindings",
    sa.Column("repository", sa.String(length=255), nullable=False),
    sa.Column("source_repo", sa.String(length=100), nullable=False),
    sa.Column("bound_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("repository", name=op.f("pk_registry_app_bindings"))
    )


def downgrade() -> None:
    op.drop_table("registry_app_bindings")
