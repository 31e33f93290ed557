"""``envyard worker``: claim builds from an envyard server and run them."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import click

from envyard.builder.errors import ServiceError
from envyard.cli.output import configure_logging

__all__ = ["worker_command"]


@click.command("worker")
@click.option("--api", "api_url", help="The envyard server [ENVYARD_API_URL].")
@click.option("--token", help="A token with the worker (or admin) role [ENVYARD_TOKEN].")
@click.option("--platform", "platforms", multiple=True, help="Only take builds for these platforms (repeatable).")
@click.option("--concurrency", default=1, show_default=True, type=int, help="Builds run at once.")
@click.option("--name", help="Worker name shown on builds [default: worker@HOSTNAME-PID].")
@click.option("--once", is_flag=True, help="Claim one build, run it and exit: 0 completed or canceled, 1 failed, "
              "75 nothing claimed or the build was lost (how Kubernetes build Jobs run; a build-scoped token "
              "claims only its build).")
@click.option("--claim-timeout", default=300.0, show_default=True, type=float,
              help="With --once: seconds to wait for a build to claim.")
@click.option("--work-dir", type=click.Path(path_type=Path), help="Scratch space for builds "
              "[default: ENVYARD_WORK_ROOT, else <cache-dir>/work].")
def worker_command(api_url: str | None, token: str | None, platforms: tuple[str, ...], concurrency: int,
                   name: str | None, once: bool, claim_timeout: float, work_dir: Path | None) -> None:
    """Claim builds from an envyard server and run them until SIGTERM/SIGINT (--once: one build)."""
    from envyard.api.settings import ServiceSettings
    from envyard.worker.runner import ONCE_EXIT_CODES, WorkerOptions, parse_pauses, run_once, run_worker

    configure_logging("INFO")
    settings = ServiceSettings()
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
    click.echo(f"envyard worker {options.name} claiming {'one build ' if once else ''}from {api_url}", err=True)
    if once:
        outcome = run_once(options, stop, claim_timeout)
        click.echo(f"envyard worker {options.name}: {outcome}", err=True)
        raise SystemExit(ONCE_EXIT_CODES[outcome])
    run_worker(options, stop)
