"""Namespace secrets (encrypted), DVC data snapshots and run manifests.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "namespacesecret",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["namespace_id"], ["namespace.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace_id", "name", name="uq_namespace_secret_name"),
    )
    with op.batch_alter_table("namespacesecret", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_namespacesecret_namespace_id"), ["namespace_id"], unique=False)

    op.create_table(
        "datasnapshotrecord",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("repo", sa.String(length=1000), nullable=False),
        sa.Column("rev", sa.String(length=255), nullable=False),
        sa.Column("commit", sa.String(length=64), nullable=False),
        sa.Column("remote", sa.String(length=200), nullable=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["namespace_id"], ["namespace.id"]),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("datasnapshotrecord", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_datasnapshotrecord_namespace_id"), ["namespace_id"], unique=False)

    op.create_table(
        "runmanifestrecord",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("referrer_sha256", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["namespace_id"], ["namespace.id"]),
        sa.ForeignKeyConstraint(["build_id"], ["build.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace_id", "sha256", name="uq_run_manifest_digest"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("runmanifestrecord", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runmanifestrecord_namespace_id"), ["namespace_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_runmanifestrecord_build_id"), ["build_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_runmanifestrecord_sha256"), ["sha256"], unique=False)


def downgrade() -> None:
    for table, indexes in (("runmanifestrecord", ("sha256", "build_id", "namespace_id")),
                           ("datasnapshotrecord", ("namespace_id",)), ("namespacesecret", ("namespace_id",))):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in indexes:
                batch_op.drop_index(batch_op.f(f"ix_{table}_{column}"))
        op.drop_table(table)
