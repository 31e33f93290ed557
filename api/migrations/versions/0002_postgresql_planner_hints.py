"""PostgreSQL: correlated (name, version) statistics for package filters; lz4 for log chunks.

Revision ID: 0002
Revises: 0001

Without extended statistics the planner underestimates how many builds contain a popular
package at one version and scans every environment; with them it walks the primary key and
stops after a page. lz4 stores a log chunk about three times faster than the default pglz.
SQLite needs neither: both steps are skipped there.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE STATISTICS IF NOT EXISTS st_buildpackage_name_version (dependencies, mcv) "
               "ON name, version FROM buildpackage")
    if op.get_bind().dialect.server_version_info >= (14,):
        op.execute("ALTER TABLE logchunk ALTER COLUMN text SET COMPRESSION lz4")
    op.execute("ANALYZE buildpackage")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP STATISTICS IF EXISTS st_buildpackage_name_version")
    if op.get_bind().dialect.server_version_info >= (14,):
        op.execute("ALTER TABLE logchunk ALTER COLUMN text SET COMPRESSION DEFAULT")
