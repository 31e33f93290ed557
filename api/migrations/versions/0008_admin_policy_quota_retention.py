"""Admins: policies at three levels, namespace quotas and retention, submission counters, usage events,
promotions and deprecations; builds get their policy, ``pinned`` and ``collected_at``.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _at(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(), nullable=False)


def upgrade() -> None:
    # plain ADD COLUMN (no batch copy of the table: other tables' foreign keys point at build)
    op.add_column("build", sa.Column("policy", sa.JSON(), nullable=False, server_default="{}"))
    op.add_column("build", sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("build", sa.Column("collected_at", sa.DateTime(), nullable=True))
    op.create_table(
        "policydocument",
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=True),
        sa.Column("environment_id", sa.Integer(), nullable=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        _at("updated_at"),
        sa.ForeignKeyConstraint(["namespace_id"], ["namespace.id"]),
        sa.ForeignKeyConstraint(["environment_id"], ["environment.id"]),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_policydocument_namespace_id", "policydocument", ["namespace_id"])
    op.create_index("ix_policydocument_environment_id", "policydocument", ["environment_id"])
    op.create_table(
        "namespacequota",
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("storage_bytes", sa.BigInteger(), nullable=True),
        sa.Column("concurrent_builds", sa.Integer(), nullable=True),
        sa.Column("submissions_per_minute", sa.Integer(), nullable=True),
        sa.Column("keep_last", sa.Integer(), nullable=True),
        sa.Column("keep_days", sa.Integer(), nullable=True),
        _at("updated_at"),
        sa.ForeignKeyConstraint(["namespace_id"], ["namespace.id"]),
        sa.PrimaryKeyConstraint("namespace_id"),
    )
    op.create_table(
        "submissioncounter",
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("window", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "window"),
    )
    op.create_table(
        "usageevent",
        sa.Column("id", sa.Integer(), nullable=False),
        _at("at"),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=True),
        sa.Column("principal", sa.String(length=100), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_usageevent_at", "usageevent", ["at"])
    op.create_index("ix_usageevent_environment_id", "usageevent", ["environment_id"])
    op.create_table(
        "promotion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_build_id", sa.Integer(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("promoted_by", sa.String(length=100), nullable=True),
        _at("created_at"),
        sa.ForeignKeyConstraint(["source_build_id"], ["build.id"]),
        sa.ForeignKeyConstraint(["build_id"], ["build.id"]),
        sa.ForeignKeyConstraint(["environment_id"], ["environment.id"]),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    for column in ("source_build_id", "build_id", "environment_id"):
        op.create_index(f"ix_promotion_{column}", "promotion", [column])
    op.create_table(
        "deprecation",
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("successor", sa.String(length=201), nullable=True),
        sa.Column("message", sa.String(length=1000), nullable=False),
        sa.Column("deprecated_by", sa.String(length=100), nullable=True),
        _at("deprecated_at"),
        sa.ForeignKeyConstraint(["environment_id"], ["environment.id"]),
        sa.PrimaryKeyConstraint("environment_id"),
    )


def downgrade() -> None:
    for table in ("deprecation", "promotion", "usageevent", "submissioncounter", "namespacequota", "policydocument"):
        op.drop_table(table)
    with op.batch_alter_table("build", schema=None) as batch_op:
        batch_op.drop_column("collected_at")
        batch_op.drop_column("pinned")
        batch_op.drop_column("policy")
