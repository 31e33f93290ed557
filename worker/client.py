"""The worker's side of the HTTP protocol (/api/v1/jobs, bodies in :mod:`envyard.worker.protocol`). A worker holds
a token, never database credentials.

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
from envyard.worker.protocol import (
    ArtifactEntry,
    ClaimRequest,
    Completion,
    FailRequest,
    HeartbeatReply,
    Job,
    LeaseRef,
    ProtocolRequest,
    StageName,
    StageUpdate,
    UploadFinish,
    UploadRequest,
    UploadTicket,
)

__all__ = ["ApiClient", "error_from_problem"]

log = logging.getLogger(__name__)
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

    # --- the protocol (envyard.worker.protocol) ----------------------------------------------------------

    def send(self, method: str, path: str, body: ProtocolRequest, **kwargs: Any) -> httpx.Response:
        return self.request(method, path, json=body.model_dump(mode="json"), **kwargs)

    def claim(self, worker: str, platforms: list[str] | None, wait_seconds: float) -> Job | None:
        response = self.send("POST", "/api/v1/jobs/claim", ClaimRequest(worker=worker, platforms=platforms,
                                                                         wait_seconds=wait_seconds),
                             timeout=wait_seconds + 30)
        return None if response.status_code == 204 else Job.model_validate_json(response.content)

    def heartbeat(self, build_id: int, lease_id: str, retry: bool = True) -> HeartbeatReply:
        response = self.send("POST", f"/api/v1/jobs/{build_id}/heartbeat", LeaseRef(lease_id=lease_id), retry=retry)
        return HeartbeatReply.model_validate_json(response.content)

    def stage(self, build_id: int, lease_id: str, stage: StageName) -> None:
        self.send("POST", f"/api/v1/jobs/{build_id}/stage", StageUpdate(lease_id=lease_id, stage=stage))

    def append_logs(self, build_id: int, lease_id: str, text: str) -> None:
        """A batch of log lines: the text itself is the body (not JSON), the lease a query parameter."""
        self.request("POST", f"/api/v1/jobs/{build_id}/logs", params={"lease_id": lease_id},
                     content=text.encode(), headers={"Content-Type": "text/plain; charset=utf-8"})

    def upload(self, build_id: int, lease_id: str, path: Path, sha256: str, size: int) -> bool:
        """Store ``path`` under its digest: skipped when present, straight to S3 when the server presigns,
        else streamed through the API. Returns True when bytes were sent."""
        response = self.send("POST", f"/api/v1/jobs/{build_id}/uploads",
                             UploadRequest(lease_id=lease_id, sha256=sha256, size=size))
        ticket = UploadTicket.model_validate_json(response.content)
        if ticket.present:
            return False
        if ticket.url and ticket.upload_id:
            with httpx.Client(timeout=httpx.Timeout(300.0, connect=5.0)) as direct:
                response = direct.put(ticket.url, content=_read_chunks(path),
                                      headers={"Content-Length": str(size)})
            if response.status_code >= 300:
                raise ServiceError(f"presigned upload of {path.name} failed: HTTP {response.status_code}",
                                   hint="check that workers can reach the object store")
            self.send("POST", f"/api/v1/jobs/{build_id}/uploads/finish",
                      UploadFinish(lease_id=lease_id, upload_id=ticket.upload_id, sha256=sha256, size=size))
            return True
        self.request("PUT", f"/api/v1/jobs/{build_id}/blobs/sha256:{sha256}",
                     params={"lease_id": lease_id, "size": size}, content_factory=lambda: _read_chunks(path),
                     headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
        return True

    def complete(self, build_id: int, lease_id: str, result: Completion) -> dict[str, Any]:
        """Publish the build; the answer is the build as the public API shows it."""
        return dict(self.send("POST", f"/api/v1/jobs/{build_id}/complete", result.request(lease_id)).json())

    def fail(self, build_id: int, lease_id: str, code: str, stage: str | None, message: str,
             hint: str | None, artifacts: list[ArtifactEntry] | None = None) -> None:
        """``artifacts``: uploaded files the failed build keeps as partial artifacts (its lock files)."""
        self.send("POST", f"/api/v1/jobs/{build_id}/fail",
                  FailRequest(lease_id=lease_id, code=code, stage=stage, message=message, hint=hint,
                              artifacts=artifacts or []))

    def canceled(self, build_id: int, lease_id: str) -> None:
        self.send("POST", f"/api/v1/jobs/{build_id}/canceled", LeaseRef(lease_id=lease_id))


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk

