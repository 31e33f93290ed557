"""The same Alembic migrations on SQLite and PostgreSQL: up, down and up again, ending at the models' schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import envyard.api.models  # noqa: F401  (registers the tables)
from envyard.api.db import current_revision, make_engine, migrate
from envyard.builder.errors import ServiceError
from tests.servers import free_port


def _url(database: str, tmp_path: Path) -> str:
    return database or f"sqlite:///{tmp_path / 'envyard.db'}"


def test_upgrade_downgrade_upgrade_matches_models(database: str, tmp_path: Path) -> None:
    engine = make_engine(_url(database, tmp_path))
    migrate(engine)
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from envyard.api.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert current_revision(engine) == ScriptDirectory.from_config(config).get_current_head()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    if engine.dialect.name == "sqlite":  # SQLite cannot add the environment -> build key after the fact
        diff = [d for d in diff if not (d[0] == "add_fk" and d[1].name == "fk_environment_current_build")]
    assert diff == []
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_bad_database_url_is_a_clear_error() -> None:
    with pytest.raises(ServiceError, match="cannot be parsed"):
        make_engine("not a url")
    unreachable = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/envyard")
    with pytest.raises(ServiceError, match="database migration failed") as raised:
        migrate(unreachable)
    assert raised.value.hint and "database URL" in raised.value.hint


def test_upgrade_to_0003_keeps_namespaces_and_artifacts(database: str, tmp_path: Path) -> None:
    """Rows written under 0002 survive 0003: namespaces become private, artifacts get no subject."""
    from alembic import command
    from alembic.config import Config

    from envyard.api.db import MIGRATIONS

    engine = make_engine(_url(database, tmp_path))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        connection.exec_driver_sql(
            "INSERT INTO namespace (name, description, created_at) VALUES ('kept', '', '2026-01-01 00:00:00')")
    migrate(engine)
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT name, public FROM namespace").all()
    assert [(name, bool(public)) for name, public in rows] == [("kept", False)]
    engine.dispose()


def test_0005_keeps_rows_and_never_reuses_ids(database: str, tmp_path: Path) -> None:
    """Rows written before 0005 keep their ids and references; afterwards a deleted row's id is never given out
    again (SQLite AUTOINCREMENT; PostgreSQL sequences), and artifacts are not partial unless marked so."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from envyard.api.db import MIGRATIONS

    engine = make_engine(_url(database, tmp_path))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    before = ScriptDirectory.from_config(config).get_revision("0005").down_revision
    assert isinstance(before, str)
    now = "'2026-01-01 00:00:00'"
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, before)
        for sql in (
            f"INSERT INTO namespace (id, name, description, public, created_at) VALUES (1, 'ns', '', false, {now})",
            f"INSERT INTO environment (id, namespace_id, name, description, created_at, updated_at) "
            f"VALUES (1, 1, 'env', '', {now}, {now})",
            "INSERT INTO spec (id, sha256, filename, content, created_at) VALUES (1, 'x', 'environment.yml', '', "
            f"{now})",
            *(f"INSERT INTO build (id, environment_id, spec_id, status, platforms, options, attempt, "
              f"cancel_requested, created_at, package_count, log_bytes, log_lines) VALUES ({i}, 1, 1, 'completed', "
              f"'[]', '{{}}', 1, false, {now}, 0, 0, 0)" for i in (1, 2, 3)),
            "UPDATE environment SET current_build_id = 3 WHERE id = 1",
            "INSERT INTO buildartifact (id, build_id, kind, name, sha256, size, media_type) "
            f"VALUES (1, 3, 'conda-lock', 'conda-lock.yml', '{'0' * 64}', 1, 'application/yaml')",
        ):
            connection.exec_driver_sql(sql)
    migrate(engine)
    with engine.begin() as connection:
        assert connection.exec_driver_sql("SELECT id FROM build ORDER BY id").scalars().all() == [1, 2, 3]
        assert connection.exec_driver_sql("SELECT current_build_id FROM environment").scalar() == 3
        assert connection.exec_driver_sql("SELECT build_id, partial FROM buildartifact").one() == (3, False)
        if engine.dialect.name == "sqlite":
            assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            for table in ("namespace", "environment", "build", "apitoken", "buildartifact"):
                sql = connection.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).scalar()
                assert "AUTOINCREMENT" in sql, sql
            # the rows inserted with explicit ids above never advanced PostgreSQL's sequence: only SQLite's counter
            # is checked against them
            connection.exec_driver_sql("DELETE FROM buildartifact")
            connection.exec_driver_sql("UPDATE environment SET current_build_id = 2")
            connection.exec_driver_sql("DELETE FROM build WHERE id = 3")
            new = connection.exec_driver_sql(
                "INSERT INTO build (environment_id, spec_id, status, platforms, options, attempt, cancel_requested, "
                f"created_at, package_count, log_bytes, log_lines) VALUES (1, 1, 'queued', '[]', '{{}}', 0, false, "
                f"{now}, 0, 0, 0) RETURNING id").scalar()
            assert new == 4
    engine.dispose()
