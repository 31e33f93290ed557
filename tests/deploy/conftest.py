"""Deployment tests: kustomize overlays, the compose file, envyard's own image, replicas migrating one database."""

from tests.service.conftest import postgres_url  # noqa: F401 - the shared PostgreSQL server
