"""A real HTTP listener on loopback that records every request (the target of the SSRF regression tests, and the
receiver of webhook notifications)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Listener:
    """``http://127.0.0.1:port``; ``requests`` are the paths asked for, in order."""

    port: int
    requests: list[str] = field(default_factory=list)
    #: POSTs as (path, headers with lower-case names, body), in order; answered with the statuses of
    #: ``post_statuses`` in turn, then 200
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    post_statuses: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def recording_listener(directory: Path | None = None) -> Iterator[Listener]:
    """Serve ``directory`` (or 404 everything) on a free loopback port, recording each request."""
    listener = Listener(0)
    root = str(directory) if directory is not None else "/nonexistent-envyard-listener-root"

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=root, **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            listener.requests.append(self.path)
            super().do_GET()

        def do_HEAD(self) -> None:  # noqa: N802
            listener.requests.append(self.path)
            super().do_HEAD()

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            listener.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(listener.post_statuses.pop(0) if listener.post_statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler))
    listener.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
