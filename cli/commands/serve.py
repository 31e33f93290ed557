"""``envyard serve``: the API on uvicorn, with in-process workers that use the same HTTP protocol."""

from __future__ import annotations

import gc
import socket
import threading
from pathlib import Path
from typing import Any

import click

from envyard.cli.output import configure_logging

__all__ = ["serve", "serve_command"]


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Database, artifacts, admin token "
              "[default: ./envyard-data, or ENVYARD_DATA_DIR].")
@click.option("--database", "database_url", help="SQLAlchemy URL, e.g. postgresql://user@host/db [default: SQLite "
              "in the data directory].")
@click.option("--storage", "storage_url", help="file:///path or s3://bucket/prefix [default: <data-dir>/artifacts].")
@click.option("--workers", default=1, show_default=True, type=int, help="In-process build workers (0: none).")
@click.option("--build-backend", type=click.Choice(["inprocess", "external", "kubernetes"]),
              help="Where builds run: in-process workers (--workers), external `envyard worker` processes only, or "
              "one Kubernetes Job per build (docs/kubernetes-builds.md) [ENVYARD_BUILD_BACKEND, default inprocess].")
@click.option("--worker-platform", "worker_platforms", multiple=True, help="Platforms in-process workers take.")
@click.option("--allow-url", "allow_urls", multiple=True, metavar="PREFIX",
              help="Let specs name channels, channel aliases and pip indexes under PREFIX besides public https:// "
              "hosts (repeatable): an http(s) URL prefix, or file:///dir/ (or a directory) for local channels. "
              "Adds to ENVYARD_ALLOWED_URL_PREFIXES / ENVYARD_ALLOWED_FILE_ROOTS.")
@click.option("--log-level", default="info", show_default=True)
def serve_command(host: str, port: int, data_dir: Path | None, database_url: str | None, storage_url: str | None,
                  workers: int, build_backend: str | None, worker_platforms: tuple[str, ...],
                  allow_urls: tuple[str, ...], log_level: str) -> None:
    """Run the API, in-process workers and the artifact store on one port."""
    from urllib.request import url2pathname

    from envyard.api.settings import ServiceSettings

    configure_logging(log_level)
    overrides = {"data_dir": data_dir, "database_url": database_url, "storage_url": storage_url,
                 "build_backend": build_backend}
    settings = ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})
    roots = [Path(url2pathname(u[len("file://"):])) if u.startswith("file://") else Path(u)
             for u in allow_urls if u.startswith("file://") or "://" not in u]
    prefixes = [u for u in allow_urls if "://" in u and not u.startswith("file://")]
    settings = settings.model_copy(update={
        "allowed_url_prefixes": [*settings.allowed_url_prefixes, *prefixes],
        "allowed_file_roots": [*settings.allowed_file_roots, *(r.absolute() for r in roots)],
    })
    click.echo(f"envyard serving on http://{host}:{port} (data: {settings.data_dir.absolute()}, "
               f"admin token in {settings.admin_token_file.absolute()})", err=True)
    serve(settings, host, port, workers, list(worker_platforms) or None, log_level)


def serve(settings: Any, host: str, port: int, workers: int, worker_platforms: list[str] | None,
          log_level: str = "info") -> None:
    """Serve ``settings`` (:class:`envyard.api.settings.ServiceSettings`) until SIGINT/SIGTERM; in-process workers
    stop with the server (their leases then expire)."""
    import uvicorn

    from envyard.api.app import create_app
    from envyard.api.deps import app_state
    from envyard.api.files import private_dir
    from envyard.worker.runner import WorkerOptions, parse_pauses, run_worker

    if settings.build_backend != "inprocess":
        workers = 0
    cluster = None
    if settings.build_backend == "kubernetes":
        from envyard.api.build_backends.cluster import connect

        cluster = connect(settings.kubernetes_namespace)  # fails here, clearly, without a cluster
    private_dir(settings.data_dir)  # 0700: the database, blobs, admin token and secret key live there
    app = create_app(settings, host=host)
    gc.collect()
    gc.freeze()  # the imported world is long-lived: keep full collections from walking it on every request
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    stop = threading.Event()
    threads = []
    if workers > 0:
        client_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        options = WorkerOptions(
            api_url=f"http://{client_host}:{port}", token=app_state(app).admin_token,
            name=f"embedded@{socket.gethostname()}", work_dir=settings.resolved_work_root,
            settings=settings, platforms=worker_platforms, concurrency=workers, wait_seconds=2.0,
            pause_at=parse_pauses(settings.test_stage_delay),
        )
        threads.append(threading.Thread(target=run_worker, args=(options, stop), name="envyard-workers"))
    if cluster is not None:
        from envyard.api.build_backends.launcher import Launcher

        state = app_state(app)
        launcher = Launcher(state.engine, settings, state.principals.secret_key, cluster)
        threads.append(threading.Thread(target=launcher.run, args=(stop,), name="envyard-launcher"))
    for thread in threads:
        thread.start()
    try:
        server.run()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
