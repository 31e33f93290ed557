"""CI: environment sources (repository, branch, spec path) for push hooks, scheduled relocks, handled webhook
deliveries (replays are ignored), the lock diff of a scheduled relock's build, and named leases on periodic work.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _created_at(name: str = "created_at") -> sa.Column:
    return sa.Column(name, sa.DateTime(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "environmentsource",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("repo_url", sa.String(length=500), nullable=False),
        sa.Column("branch", sa.String(length=200), nullable=True),
        sa.Column("spec_path", sa.String(length=500), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(["environment_id"], ["environment.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("environment_id", name="uq_environment_source"),
    )
    with op.batch_alter_table("environmentsource", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_environmentsource_repo_url"), ["repo_url"], unique=False)
    op.create_table(
        "relockschedule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=False),
        sa.Column("notify_url", sa.String(length=500), nullable=True),
        sa.Column("next_run_at", sa.DateTime(), nullable=True),
        sa.Column("last_run_at", sa.DateTime(), nullable=True),
        sa.Column("last_result", sa.String(length=500), nullable=True),
        _created_at(),
        sa.ForeignKeyConstraint(["environment_id"], ["environment.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("environment_id", name="uq_relock_schedule"),
    )
    with op.batch_alter_table("relockschedule", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_relockschedule_next_run_at"), ["next_run_at"], unique=False)
    op.create_table(
        "hookdelivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("delivery_id", sa.String(length=200), nullable=False),
        _created_at("received_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "delivery_id", name="uq_hook_delivery"),
    )
    op.create_table(
        "buildlockdiff",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("previous_build_id", sa.Integer(), nullable=True),
        sa.Column("diff", sa.JSON(), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(["build_id"], ["build.id"]),
        sa.ForeignKeyConstraint(["previous_build_id"], ["build.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("build_id"),
    )
    op.create_table(
        "servicelease",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("holder", sa.String(length=100), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("servicelease")
    op.drop_table("buildlockdiff")
    op.drop_table("hookdelivery")
    with op.batch_alter_table("relockschedule", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_relockschedule_next_run_at"))
    op.drop_table("relockschedule")
    with op.batch_alter_table("environmentsource", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_environmentsource_repo_url"))
    op.drop_table("environmentsource")
