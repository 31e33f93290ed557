"""Registry: public namespaces and per-namespace grants, referrer fields on artifacts, external registry
targets and their publications, and the blob holds and tombstones that make garbage collection safe.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(), nullable=False)


def upgrade() -> None:
    with op.batch_alter_table("namespace", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("buildartifact", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("artifact_type", sa.String(length=200), nullable=True))
        batch_op.create_index(batch_op.f("ix_buildartifact_subject"), ["subject"], unique=False)

    op.create_table(
        "namespacegrant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(["namespace_id"], ["namespace.id"]),
        sa.ForeignKeyConstraint(["token_id"], ["apitoken.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace_id", "token_id", name="uq_namespace_grant"),
    )
    with op.batch_alter_table("namespacegrant", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_namespacegrant_namespace_id"), ["namespace_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_namespacegrant_token_id"), ["token_id"], unique=False)

    op.create_table(
        "registrytarget",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("repository", sa.String(length=300), nullable=False),
        sa.Column("username", sa.String(length=200), nullable=True),
        sa.Column("secret_ciphertext", sa.Text(), nullable=True),
        sa.Column("tls_verify", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(["namespace_id"], ["namespace.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace_id", "name", name="uq_registry_target_name"),
    )
    with op.batch_alter_table("registrytarget", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_registrytarget_namespace_id"), ["namespace_id"], unique=False)

    op.create_table(
        "publication",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.DateTime(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("reference", sa.String(length=600), nullable=True),
        sa.Column("digest", sa.String(length=80), nullable=True),
        sa.Column("uploaded_blobs", sa.Integer(), nullable=False),
        sa.Column("uploaded_bytes", sa.BigInteger(), nullable=False),
        sa.Column("mounted_blobs", sa.Integer(), nullable=False),
        sa.Column("existing_blobs", sa.Integer(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        _created_at(),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["build_id"], ["build.id"]),
        sa.ForeignKeyConstraint(["target_id"], ["registrytarget.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("build_id", "target_id", name="uq_publication_build_target"),
    )
    with op.batch_alter_table("publication", schema=None) as batch_op:
        batch_op.create_index("ix_publication_claim", ["status", "not_before"], unique=False)
        batch_op.create_index(batch_op.f("ix_publication_build_id"), ["build_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_publication_target_id"), ["target_id"], unique=False)

    op.create_table(
        "blobhold",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(["build_id"], ["build.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256", "build_id", name="uq_blob_hold"),
    )
    with op.batch_alter_table("blobhold", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_blobhold_sha256"), ["sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_blobhold_build_id"), ["build_id"], unique=False)

    op.create_table(
        "blobtombstone",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("sha256"),
    )


def downgrade() -> None:
    op.drop_table("blobtombstone")
    with op.batch_alter_table("blobhold", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blobhold_build_id"))
        batch_op.drop_index(batch_op.f("ix_blobhold_sha256"))
    op.drop_table("blobhold")
    with op.batch_alter_table("publication", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_publication_target_id"))
        batch_op.drop_index(batch_op.f("ix_publication_build_id"))
        batch_op.drop_index("ix_publication_claim")
    op.drop_table("publication")
    with op.batch_alter_table("registrytarget", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_registrytarget_namespace_id"))
    op.drop_table("registrytarget")
    with op.batch_alter_table("namespacegrant", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_namespacegrant_token_id"))
        batch_op.drop_index(batch_op.f("ix_namespacegrant_namespace_id"))
    op.drop_table("namespacegrant")
    with op.batch_alter_table("buildartifact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_buildartifact_subject"))
        batch_op.drop_column("artifact_type")
        batch_op.drop_column("subject")
    with op.batch_alter_table("namespace", schema=None) as batch_op:
        batch_op.drop_column("public")
