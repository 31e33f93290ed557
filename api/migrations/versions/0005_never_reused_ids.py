"""Ids users see are never reused; artifacts kept from a failed build are marked partial.

Revision ID: 0005
Revises: 0004

SQLite gives a new row the largest id in use plus one, so after an environment was deleted its build ids went to
the next builds (a registry tag ``4`` then named another environment's build). AUTOINCREMENT stops that; SQLite
can only add it by recreating the table. PostgreSQL sequences never hand out an id twice: there only the
``partial`` column is added.

Recreating a table that other tables reference, inside the migration's transaction (where ``PRAGMA foreign_keys``
cannot be switched off): the foreign keys are deferred to the commit, the rows are moved to a temporary table, the
emptied table is recreated (so dropping it leaves no reference dangling) and the rows are put back, each insert
settling the references that the delete left open. Ids keep their values; the AUTOINCREMENT counter starts at the
largest id present (ids of rows deleted before this migration cannot be known).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("namespace", "environment", "build", "apitoken", "buildartifact")


def _recreate(table: str, autoincrement: bool) -> None:
    bind = op.get_bind()
    columns = ", ".join(f'"{c["name"]}"' for c in sa.inspect(bind).get_columns(table))
    hold = f"_hold_{table}"
    op.execute(f'CREATE TEMP TABLE "{hold}" AS SELECT * FROM "{table}"')
    op.execute(f'DELETE FROM "{table}"')
    with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
        pass
    op.execute(f'INSERT INTO "{table}" ({columns}) SELECT {columns} FROM "{hold}"')
    op.execute(f'DROP TABLE "{hold}"')


def _recreate_all(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    if not op.get_bind().connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
        op.execute("BEGIN")  # pysqlite begins at the first write; the pragma below lasts only within a transaction
    op.execute("PRAGMA defer_foreign_keys = ON")  # until the commit (which resets it)
    for table in TABLES:
        _recreate(table, autoincrement)


def upgrade() -> None:
    with op.batch_alter_table("buildartifact", schema=None) as batch_op:  # first: a batch recreate drops AUTOINCREMENT
        batch_op.add_column(sa.Column("partial", sa.Boolean(), nullable=False, server_default=sa.false()))
    _recreate_all(autoincrement=True)


def downgrade() -> None:
    _recreate_all(autoincrement=False)
    with op.batch_alter_table("buildartifact", schema=None) as batch_op:
        batch_op.drop_column("partial")
