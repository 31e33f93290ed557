"""Alembic environment: runs on the connection api.db.migrate hands over (SQLite in batch mode)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import envyard.api.models  # noqa: F401  (registers the tables)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through api.db.migrate(engine)")
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
