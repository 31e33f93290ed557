"""The worker's side of the HTTP protocol (/api/v1/jobs). A worker holds a token, never database credentials.

Calls retry through connection failures and 5xx answers (an API restart must not lose a build) until
``retry_seconds`` pass; problem-details answers come back as the typed EnvyardError they name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from envyard.builder import errors
from envyard.builder.errors import EnvyardError, ServiceError

log = logging.getLogger("envyard.worker")
CHUNK = 1024 * 1024
RETRYABLE_STATUS = {502, 503, 504}


def error_from_problem(response: httpx.Response) -> EnvyardError:
    """The typed error a problem-details answer names (ServiceError for anything else)."""
    try:
        problem = response.json()
    except ValueError:
        return ServiceError(f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}",
                            hint="the server did not answer with problem details; check its log")
    code = str(problem.get("type", "")).rsplit("/", 1)[-1]
    cls: type[EnvyardError] = ServiceError
    for candidate in vars(errors).values():
        if isinstance(candidate, type) and issubclass(candidate, EnvyardError) and candidate.code == code:
            cls = candidate
            break
    error = cls(str(problem.get("detail") or problem.get("title")), hint=problem.get("hint"),
                field=problem.get("field"), file=problem.get("file"), line=problem.get("line"))
    error.details = {"status": response.status_code, "code": code}
    return error


class ApiClient:
    """HTTP calls to an envyard server with a bearer token, retried through outages."""

    def __init__(self, api_url: str, token: str, *, retry_seconds: float = 120.0, timeout: float = 60.0,
                 stop: threading.Event | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.stop = stop or threading.Event()
        self.retry_seconds = retry_seconds
        self.http = httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=httpx.Timeout(timeout, connect=5.0))

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, retry: bool = True, content_factory: Any = None,
                **kwargs: Any) -> httpx.Response:
        """``content_factory`` makes a fresh body for each attempt (a streamed file is read again)."""
        deadline = time.monotonic() + (self.retry_seconds if retry else 0)
        delay = 0.2
        while True:
            try:
                if content_factory is not None:
                    kwargs["content"] = content_factory()
                response = self.http.request(method, path, **kwargs)
                if response.status_code not in RETRYABLE_STATUS:
                    break
                failure = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + delay > deadline or self.stop.is_set():
                raise ServiceError(f"{method} {self.api_url}{path} failed: {failure}",
                                   hint="check that the envyard server is running and reachable from the worker")
            log.warning("%s %s failed (%s); retrying in %.1f s", method, path, failure, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        if response.status_code >= 400:
            raise error_from_problem(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # --- the protocol -----------------------------------------------------------------------------------

    def claim(self, worker: str, platforms: list[str] | None, wait_seconds: float) -> dict[str, Any] | None:
        response = self.request("POST", "/api/v1/jobs/claim", timeout=wait_seconds + 30,
                                json={"worker": worker, "platforms": platforms, "wait_seconds": wait_seconds})
        return None if response.status_code == 204 else dict(response.json())

    def heartbeat(self, build_id: int, lease_id: str, retry: bool = True) -> dict[str, Any]:
        return dict(self.json("POST", f"/api/v1/jobs/{build_id}/heartbeat", json={"lease_id": lease_id},
                              retry=retry))

    def stage(self, build_id: int, lease_id: str, stage: str) -> None:
        self.request("POST", f"/api/v1/jobs/{build_id}/stage", json={"lease_id": lease_id, "stage": stage})

    def append_logs(self, build_id: int, lease_id: str, text: str) -> None:
        self.request("POST", f"/api/v1/jobs/{build_id}/logs", params={"lease_id": lease_id},
                     content=text.encode(), headers={"Content-Type": "text/plain; charset=utf-8"})

    def upload(self, build_id: int, lease_id: str, path: Path, sha256: str, size: int) -> bool:
        """Store ``path`` under its digest: skipped when present, straight to S3 when the server presigns,
        else streamed through the API. Returns True when bytes were sent."""
        ticket = self.json("POST", f"/api/v1/jobs/{build_id}/uploads",
                           json={"lease_id": lease_id, "sha256": sha256, "size": size})
        if ticket["present"]:
            return False
        if ticket.get("url"):
            with httpx.Client(timeout=httpx.Timeout(300.0, connect=5.0)) as direct:
                response = direct.put(ticket["url"], content=_read_chunks(path),
                                      headers={"Content-Length": str(size)})
            if response.status_code >= 300:
                raise ServiceError(f"presigned upload of {path.name} failed: HTTP {response.status_code}",
                                   hint="check that workers can reach the object store")
            self.request("POST", f"/api/v1/jobs/{build_id}/uploads/finish",
                         json={"lease_id": lease_id, "upload_id": ticket["upload_id"], "sha256": sha256,
                               "size": size})
            return True
        self.request("PUT", f"/api/v1/jobs/{build_id}/blobs/sha256:{sha256}",
                     params={"lease_id": lease_id, "size": size}, content_factory=lambda: _read_chunks(path),
                     headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
        return True

    def complete(self, build_id: int, lease_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.json("POST", f"/api/v1/jobs/{build_id}/complete", json={"lease_id": lease_id, **body}))

    def fail(self, build_id: int, lease_id: str, code: str, stage: str | None, message: str,
             hint: str | None, artifacts: list[dict[str, Any]] | None = None) -> None:
        """``artifacts``: uploaded files the failed build keeps as partial artifacts (its lock files)."""
        self.request("POST", f"/api/v1/jobs/{build_id}/fail",
                     json={"lease_id": lease_id, "code": code, "stage": stage, "message": message, "hint": hint,
                           "artifacts": artifacts or []})

    def canceled(self, build_id: int, lease_id: str) -> None:
        self.request("POST", f"/api/v1/jobs/{build_id}/canceled", json={"lease_id": lease_id})


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk

