"""``envyard serve`` and ``envyard worker``."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import click

from envyard.builder.errors import ServiceError


def configure_logging(level: str) -> None:
    """Log lines with time, level and logger on stderr (``serve``, ``worker``); HTTP and migration libraries only
    from warnings up."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "httpcore", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _service_settings(**overrides: Any) -> Any:
    from envyard.api.settings import ServiceSettings

    return ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Database, artifacts, admin token "
              "[default: ./envyard-data, or ENVYARD_DATA_DIR].")
@click.option("--database", "database_url", help="SQLAlchemy URL, e.g. postgresql://user@host/db [default: SQLite "
              "in the data directory].")
@click.option("--storage", "storage_url", help="file:///path or s3://bucket/prefix [default: <data-dir>/artifacts].")
@click.option("--workers", default=1, show_default=True, type=int, help="In-process build workers (0: none).")
@click.option("--worker-platform", "worker_platforms", multiple=True, help="Platforms in-process workers take.")
@click.option("--allow-url", "allow_urls", multiple=True, metavar="PREFIX",
              help="Let specs name channels, channel aliases and pip indexes under PREFIX besides public https:// "
              "hosts (repeatable): an http(s) URL prefix, or file:///dir/ (or a directory) for local channels. "
              "Adds to ENVYARD_ALLOWED_URL_PREFIXES / ENVYARD_ALLOWED_FILE_ROOTS.")
@click.option("--log-level", default="info", show_default=True)
def serve_command(host: str, port: int, data_dir: Path | None, database_url: str | None, storage_url: str | None,
                  workers: int, worker_platforms: tuple[str, ...], allow_urls: tuple[str, ...],
                  log_level: str) -> None:
    """Run the API, in-process workers and the artifact store on one port."""
    from urllib.request import url2pathname

    from envyard.api.server import serve

    configure_logging(log_level)
    settings = _service_settings(data_dir=data_dir, database_url=database_url, storage_url=storage_url)
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


@click.command("worker")
@click.option("--api", "api_url", help="The envyard server [ENVYARD_API_URL].")
@click.option("--token", help="A token with the worker (or admin) role [ENVYARD_TOKEN].")
@click.option("--platform", "platforms", multiple=True, help="Only take builds for these platforms (repeatable).")
@click.option("--concurrency", default=1, show_default=True, type=int, help="Builds run at once.")
@click.option("--name", help="Worker name shown on builds [default: worker@HOSTNAME-PID].")
@click.option("--work-dir", type=click.Path(path_type=Path), help="Scratch space for builds "
              "[default: ENVYARD_WORK_ROOT, else <cache-dir>/work].")
def worker_command(api_url: str | None, token: str | None, platforms: tuple[str, ...], concurrency: int,
                   name: str | None, work_dir: Path | None) -> None:
    """Claim builds from an envyard server and run them until SIGTERM/SIGINT."""
    import os

    from envyard.worker.runner import WorkerOptions, parse_pauses, run_worker

    configure_logging("info")
    settings = _service_settings()
    api_url = api_url or settings.api_url
    token = token or settings.token
    if not api_url or not token:
        raise ServiceError("a worker needs the server's URL and a token",
                           hint="pass --api URL --token T (or set ENVYARD_API_URL and ENVYARD_TOKEN)")
    options = WorkerOptions(api_url=api_url, token=token, name=name or f"worker@{socket.gethostname()}-{os.getpid()}",
                            work_dir=(work_dir or settings.resolved_work_root).absolute(), settings=settings,
                            platforms=list(platforms) or None, concurrency=concurrency,
                            pause_at=parse_pauses(settings.test_stage_delay))
    stop = threading.Event()

    def handle(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    click.echo(f"envyard worker {options.name} claiming from {api_url}", err=True)
    run_worker(options, stop)


def register(cli: click.Group) -> None:
    cli.add_command(serve_command)
    cli.add_command(worker_command)
