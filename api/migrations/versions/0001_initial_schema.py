"""initial schema: namespaces, specs, environments, builds, artifacts, packages, logs, tokens

Revision ID: 0001
Revises:
Create Date: 2026-11-22 01:16:35.024577
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "apitoken",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("apitoken", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_apitoken_token_sha256"), ["token_sha256"], unique=True)

    op.create_table(
        "namespace",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("namespace", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_namespace_name"), ["name"], unique=True)

    op.create_table(
        "spec",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("spec", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_spec_sha256"), ["sha256"], unique=True)

    op.create_table(
        "environment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("current_build_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["namespace.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace_id", "name", name="uq_environment_namespace_name"),
    )
    with op.batch_alter_table("environment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_environment_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_environment_namespace_id"), ["namespace_id"], unique=False)

    op.create_table(
        "build",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("spec_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("platforms", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.DateTime(), nullable=True),
        sa.Column("lease_id", sa.String(length=64), nullable=True),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_stage", sa.String(length=20), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_hint", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("queued_at", sa.DateTime(), nullable=True),
        sa.Column("solving_at", sa.DateTime(), nullable=True),
        sa.Column("installing_at", sa.DateTime(), nullable=True),
        sa.Column("imaging_at", sa.DateTime(), nullable=True),
        sa.Column("pushing_at", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("image_digest", sa.String(length=80), nullable=True),
        sa.Column("lock_sha256", sa.String(length=64), nullable=True),
        sa.Column("package_count", sa.Integer(), nullable=False),
        sa.Column("log_bytes", sa.BigInteger(), nullable=False),
        sa.Column("log_lines", sa.BigInteger(), nullable=False),
        sa.Column("requested_by", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environment.id"],
        ),
        sa.ForeignKeyConstraint(
            ["spec_id"],
            ["spec.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("build", schema=None) as batch_op:
        batch_op.create_index("ix_build_claim", ["status", "not_before"], unique=False)
        batch_op.create_index(batch_op.f("ix_build_environment_id"), ["environment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_build_spec_id"), ["spec_id"], unique=False)

    if op.get_bind().dialect.name != "sqlite":  # SQLite cannot add a constraint to an existing table
        op.create_foreign_key("fk_environment_current_build", "environment", "build", ["current_build_id"], ["id"])
    op.create_table(
        "buildartifact",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("platform", sa.String(length=40), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["build.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("build_id", "name", name="uq_build_artifact_name"),
    )
    with op.batch_alter_table("buildartifact", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_buildartifact_build_id"), ["build_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_buildartifact_sha256"), ["sha256"], unique=False)

    op.create_table(
        "buildpackage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=40), nullable=False),
        sa.Column("manager", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("build", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["build.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("buildpackage", schema=None) as batch_op:
        batch_op.create_index("ix_build_package_name_version", ["name", "version"], unique=False)
        batch_op.create_index(batch_op.f("ix_buildpackage_build_id"), ["build_id"], unique=False)

    op.create_table(
        "logchunk",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["build.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("logchunk", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_logchunk_build_id"), ["build_id"], unique=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_environment_current_build", "environment", type_="foreignkey")

    with op.batch_alter_table("logchunk", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_logchunk_build_id"))

    op.drop_table("logchunk")
    with op.batch_alter_table("buildpackage", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_buildpackage_build_id"))
        batch_op.drop_index("ix_build_package_name_version")

    op.drop_table("buildpackage")
    with op.batch_alter_table("buildartifact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_buildartifact_sha256"))
        batch_op.drop_index(batch_op.f("ix_buildartifact_build_id"))

    op.drop_table("buildartifact")
    with op.batch_alter_table("build", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_build_spec_id"))
        batch_op.drop_index(batch_op.f("ix_build_environment_id"))
        batch_op.drop_index("ix_build_claim")

    op.drop_table("build")
    with op.batch_alter_table("environment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_environment_namespace_id"))
        batch_op.drop_index(batch_op.f("ix_environment_name"))

    op.drop_table("environment")
    with op.batch_alter_table("spec", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_spec_sha256"))

    op.drop_table("spec")
    with op.batch_alter_table("namespace", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_namespace_name"))

    op.drop_table("namespace")
    with op.batch_alter_table("apitoken", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_apitoken_token_sha256"))

    op.drop_table("apitoken")
