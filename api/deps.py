"""Request-scoped dependencies: a database session, the artifact store, the lease policy."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlmodel import Session

from envyard.api.services.jobs import LeasePolicy
from envyard.api.settings import ServiceSettings
from envyard.api.storage import ArtifactStore


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


def get_settings(request: Request) -> ServiceSettings:
    settings: ServiceSettings = request.app.state.settings
    return settings


def lease_policy(settings: ServiceSettings) -> LeasePolicy:
    return LeasePolicy(
        lease_seconds=settings.lease_seconds,
        time_limit_seconds=settings.build_time_limit_seconds,
        max_attempts=settings.max_attempts,
        backoff_seconds=settings.retry_backoff_seconds,
    )


def get_policy(request: Request) -> LeasePolicy:
    return lease_policy(get_settings(request))
