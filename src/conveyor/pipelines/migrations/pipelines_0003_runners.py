"""pipelines: runners, run tokens' companions (deployable, labels, runner), step needs, secret scopes

Revision ID: pipelines_0003
Revises: pipelines_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.core.db

revision = "pipelines_0003"
down_revision = "pipelines_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline_runs") as b:
        b.add_column(sa.Column("deployable", sa.Boolean(), server_default=sa.false(), nullable=False))
        b.add_column(sa.Column("labels", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
        b.add_column(sa.Column("runner", sa.String(length=64), nullable=True))
        b.add_column(sa.Column("commits", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
    with op.batch_alter_table("pipeline_steps") as b:
        b.add_column(sa.Column("needs", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
    with op.batch_alter_table("pipeline_secrets") as b:
        b.add_column(sa.Column("scope", sa.String(length=16), server_default="protected", nullable=False))
    op.create_table("pipeline_cadence",
    sa.Column("repo_id", sa.Integer(), nullable=False),
    sa.Column("pending_tip", sa.String(length=40), nullable=True),
    sa.Column("pending_since", conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column("pending_ref", sa.String(length=255), nullable=False),
    sa.Column("pending_actor", sa.String(length=64), nullable=False),
    sa.Column("last_built", sa.String(length=40), nullable=True),
    sa.Column("checked_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(["repo_id"], ["repositories.id"], name=op.f("fk_pipeline_cadence_repo_id_repositories"),
                            ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("repo_id", name=op.f("pk_pipeline_cadence"))
    )
    op.create_table("pipeline_runners",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=50), nullable=False),
    sa.Column("labels", sa.JSON(), nullable=False),
    sa.Column("repos", sa.JSON(), nullable=False),
    sa.Column("created_by", sa.String(length=64), nullable=False),
    sa.Column("created_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", conveyor.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column("revoked", sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_runners")),
    sa.UniqueConstraint("name", name=op.f("uq_pipeline_runners_name"))
    )


def downgrade() -> None:
    op.drop_table("pipeline_runners")
    op.drop_table("pipeline_cadence")
    with op.batch_alter_table("pipeline_secrets") as b:
        b.drop_column("scope")
    with op.batch_alter_table("pipeline_steps") as b:
        b.drop_column("needs")
    with op.batch_alter_table("pipeline_runs") as b:
        for c in ("commits", "runner", "labels", "deployable"):
            b.drop_column(c)
