"""``envyard serve``: the API on uvicorn, with in-process workers that use the same HTTP protocol."""

from __future__ import annotations

import gc
import logging
import socket
import threading

import uvicorn

from envyard.api.app import create_app
from envyard.api.files import private_dir
from envyard.api.settings import ServiceSettings
from envyard.worker.runner import WorkerOptions, parse_pauses, run_worker

log = logging.getLogger("envyard.serve")


def serve(settings: ServiceSettings, host: str, port: int, workers: int, worker_platforms: list[str] | None,
          log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; in-process workers stop with the server (their leases then expire)."""
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
            api_url=f"http://{client_host}:{port}", token=app.state.admin_token,
            name=f"embedded@{socket.gethostname()}", work_dir=settings.resolved_work_root,
            settings=settings, platforms=worker_platforms, concurrency=workers, wait_seconds=2.0,
            pause_at=parse_pauses(settings.test_stage_delay),
        )
        threads.append(threading.Thread(target=run_worker, args=(options, stop), name="envyard-workers"))
    for thread in threads:
        thread.start()
    try:
        server.run()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
