"""Two servers starting at once on one fresh PostgreSQL database (two replicas of the scale overlay's
Deployment): both migrate, one waits for the other's advisory lock, and the schema ends at head."""

from __future__ import annotations

import subprocess
import sys
import time

import psycopg

from envyard.api.db import current_revision, make_engine
from tests.service.conftest import REPO

MIGRATE = "import sys; from envyard.api.db import make_engine, migrate; migrate(make_engine(sys.argv[1])); print('ok')"


def _fresh(url: str) -> str:
    name = f"replicas_{time.monotonic_ns()}"
    admin = url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + f"/{name}"


def test_two_replicas_migrate_one_fresh_database(postgres_url: str) -> None:
    for _ in range(3):  # a race lost once could pass by luck: several fresh databases
        url = _fresh(postgres_url)
        replicas = [subprocess.Popen([sys.executable, "-c", MIGRATE, url], cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [replica.communicate(timeout=120) for replica in replicas]
        assert [replica.returncode for replica in replicas] == [0, 0], results
        head = sorted(p.stem.split("_", 1)[0] for p in (REPO / "api" / "migrations" / "versions").glob("0*.py"))[-1]
        engine = make_engine(url)
        assert current_revision(engine) == head
        engine.dispose()
