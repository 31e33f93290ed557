"""The FastAPI application: routers, the problem-details error pipeline, and the background threads (the reaper,
the publisher that pushes builds to registry targets, and the optional periodic garbage collection)."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine

from envyard.api import distribution
from envyard.api.auth.secret_key import load_or_create_secret_key
from envyard.api.auth.tokens import ensure_admin_token, token_key
from envyard.api.db import make_engine, migrate
from envyard.api.deps import AppState, install_state, lease_policy
from envyard.api.kubernetes import routes as kubernetes
from envyard.api.limits import LoadControls
from envyard.api.openapi import install_docs
from envyard.api.problems import install_problem_handlers
from envyard.api.routers import (
    access,
    admin,
    audit,
    auth,
    builds,
    catalog,
    ci,
    curation,
    health,
    jobs,
    policies,
    runs,
    tokens,
    usage,
)
from envyard.api.routers import targets as registry_targets
from envyard.api.services import gc, publish, relock
from envyard.api.services.jobs import reap
from envyard.api.settings import ServiceSettings
from envyard.api.storage import ArtifactStore, open_artifact_store

log = logging.getLogger(__name__)


def _reaper(engine: Engine, settings: ServiceSettings, stop: threading.Event) -> None:
    """Requeue lost builds and fail overdue ones even when no worker is asking for work."""
    interval = max(0.2, min(settings.lease_seconds / 3, 5.0))
    while not stop.wait(interval):
        try:
            reap(engine, lease_policy(settings))
        except Exception:  # noqa: BLE001 - the reaper must outlive a database hiccup
            log.exception("reaper pass failed")


def _publisher(engine: Engine, store: ArtifactStore, secret_key: bytes, settings: ServiceSettings,
               stop: threading.Event) -> None:
    """Push completed builds to their namespaces' registry targets: claim and run due publications."""
    while not stop.wait(publish.POLL_SECONDS):
        try:
            publish.publish_due(engine, store, secret_key, publish.policy_of(settings), stop,
                                spool_dir=settings.data_dir / "spool")
        except Exception:  # noqa: BLE001 - the publisher must outlive a database hiccup
            log.exception("publisher pass failed")


def create_app(settings: ServiceSettings, host: str | None = None) -> FastAPI:
    """An app for ``settings``: migrates the database, opens the store, ensures an admin token file. ``host``, the
    address ``envyard serve`` listens on, decides whether the documentation is public by default (see
    :meth:`ServiceSettings.docs_are_public`)."""
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_artifact_store(
        settings.resolved_storage_url, s3_endpoint=settings.s3_endpoint_url, s3_access_key=settings.s3_access_key,
        s3_secret_key=settings.s3_secret_key, s3_region=settings.s3_region, spool_dir=settings.data_dir / "spool",
    )
    secret_key = load_or_create_secret_key(settings.secret_key, settings.secret_key_file)
    admin_token = ensure_admin_token(engine, settings.admin_token_file, token_key(secret_key))
    load = LoadControls(settings, engine)  # per-token limits, the log-stream hub, spec-check threads

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        loops = [("reaper", _reaper, (engine, settings, stop)),
                 ("publisher", _publisher, (engine, store, secret_key, settings, stop))]
        if settings.gc_interval_seconds > 0:
            loops.append(("gc", gc.run_periodically,
                         (engine, store, settings.gc_interval_seconds, settings.gc_grace_seconds, stop)))
        if settings.relock_interval_seconds > 0:
            loops.append(("relock", relock.run_periodically, (engine, store, settings, stop)))
        threads = [threading.Thread(target=target, args=args, name=f"envyard-{name}", daemon=True)
                   for name, target, args in loops]
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
            load.close()
            engine.dispose()

    app = FastAPI(title="envyard", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, description="Environment builder and reproducibility service.")
    install_state(app, AppState(settings, engine, store, load, admin_token, secret_key))
    install_problem_handlers(app)
    for module in (health, catalog, builds, jobs, tokens, registry_targets, runs, admin, audit, access, auth, ci,
                   distribution, kubernetes, policies, curation, usage):
        app.include_router(module.router)
    install_docs(app, public=settings.docs_are_public(host))
    return app
