"""The throw-away PostgreSQL server that tests use: it starts, serves SQL, and is gone afterwards."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from tests.servers import postgres_available, postgres_server

pytestmark = pytest.mark.skipif(
    not postgres_available(),
    reason="PostgreSQL not available (needs initdb/postgres, e.g. apt-get install postgresql, psycopg and, as root, "
    "a 'postgres' user)",
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def test_postgres_server_serves_sql_and_stops(tmp_path: Path) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    started = time.monotonic()
    with postgres_server(tmp_path) as url:
        startup = time.monotonic() - started
        print(f"postgres_server startup took {startup:.2f} s")
        parsed = make_url(url)
        assert parsed.drivername == "postgresql+psycopg"
        assert (parsed.host, parsed.username, parsed.database) == ("127.0.0.1", "postgres", "envyard")
        assert parsed.port is not None
        port = parsed.port
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="envyard") as connection:
            assert connection.info.server_version >= 150000
            connection.execute("CREATE TABLE things (id serial PRIMARY KEY, name text NOT NULL)")
            connection.execute("INSERT INTO things (name) VALUES (%s), (%s)", ("alpha", "beta"))
            connection.commit()
            rows = connection.execute("SELECT name FROM things ORDER BY id").fetchall()
            assert rows == [("alpha",), ("beta",)]
            assert connection.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
            (data_directory,) = connection.execute("SHOW data_directory").fetchall()[0]
            backend_pid = connection.info.backend_pid
        postmaster_pid = int((Path(data_directory) / "postmaster.pid").read_text().splitlines()[0])
        assert _pid_alive(postmaster_pid)
    assert (tmp_path / "postgres.log").is_file()
    assert not _pid_alive(postmaster_pid)
    assert not _pid_alive(backend_pid)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
