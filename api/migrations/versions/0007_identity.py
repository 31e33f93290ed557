"""Identity and access: users and service accounts, their groups, role bindings on ``namespace/environment``
globs, token owners and limits (expiry, namespaces, highest role, read-only, keyed hashes), and the audit log.

Revision ID: 0007
Revises: 0006

Existing tokens keep their plain sha256 (``hash_scheme`` ``sha256``): the migration does not hold the server's
secret key, so the server rehashes each with the key (HMAC-SHA256) the first time it is used. Existing namespace
grants stay as they are: the policy reads them as bindings of their token to ``namespace/*``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _audit() -> None:
    op.create_table(
        "auditevent",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor_kind", sa.String(length=20), nullable=False),
        sa.Column("actor_name", sa.String(length=200), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target", sa.String(length=500), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("request_id", sa.String(length=100), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_auditevent_at", "auditevent", ["at"])
    op.create_index("ix_auditevent_actor_name", "auditevent", ["actor_name"])
    op.create_index("ix_auditevent_action", "auditevent", ["action"])


def _identity() -> None:
    op.create_table(
        "useraccount",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=True),
        sa.Column("email", sa.String(length=300), nullable=True),
        sa.Column("namespace", sa.String(length=100), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("provider", "subject", name="uq_useraccount_subject"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_useraccount_name", "useraccount", ["name"], unique=True)
    op.create_table(
        "groupmembership",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("useraccount.id"), nullable=False),
        sa.Column("group", sa.String(length=200), nullable=False),
        sa.UniqueConstraint("user_id", "group", name="uq_groupmembership"),
    )
    op.create_index("ix_groupmembership_user_id", "groupmembership", ["user_id"])
    op.create_index("ix_groupmembership_group", "groupmembership", ["group"])
    op.create_table(
        "rolebinding",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("subject_kind", sa.String(length=20), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("pattern", sa.String(length=201), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.UniqueConstraint("subject_kind", "subject", "pattern", name="uq_rolebinding"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_rolebinding_subject", "rolebinding", ["subject"])
    with op.batch_alter_table("apitoken", schema=None, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.add_column(sa.Column("hash_scheme", sa.String(length=20), nullable=False, server_default="sha256"))
        batch_op.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("max_role", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("read_only", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("namespaces", sa.JSON(), nullable=True))
        batch_op.create_index("ix_apitoken_user_id", ["user_id"])
        batch_op.create_foreign_key("fk_apitoken_user_id", "useraccount", ["user_id"], ["id"])


def upgrade() -> None:
    _audit()
    _identity()


def downgrade() -> None:
    with op.batch_alter_table("apitoken", schema=None, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.drop_constraint("fk_apitoken_user_id", type_="foreignkey")
        batch_op.drop_index("ix_apitoken_user_id")
        for column in ("namespaces", "read_only", "max_role", "expires_at", "user_id", "hash_scheme"):
            batch_op.drop_column(column)
    op.drop_table("rolebinding")
    op.drop_table("groupmembership")
    op.drop_table("useraccount")
    op.drop_table("auditevent")
