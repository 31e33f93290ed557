"""The admin tests use the service tests' fixtures (a real ``envyard serve``, real workers, the e2e channel built by
tests/packages.py, PostgreSQL on loopback)."""

from tests.service.conftest import database, e2e_alias, postgres_url, service_env, start

__all__ = ["database", "e2e_alias", "postgres_url", "service_env", "start"]
