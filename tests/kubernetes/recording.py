"""A recording Kubernetes API server on loopback (the cluster side of ``--apply``): it answers object creation
with the object it received (201), or with a Kubernetes ``Status`` failure of ``status``, and records each
request."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def recording_api_server(status: int = 201) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            received.append({"method": "POST", "path": self.path.split("?")[0], "body": body,
                             "authorization": self.headers.get("Authorization")})
            reply = json.dumps(body if status == 201 else {
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": status,
                "message": f"pods \"{body['metadata']['name']}\" already exists"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
