"""Following a build from the CLI (the log's Server-Sent Events, polling when the stream drops, a progress
display, the exit code of its outcome) and downloading its artifacts with a digest check.

``GET /api/v1/builds/{id}/logs?follow=true`` sends ``event: log`` (``id:`` and one ``data:`` line per log line),
``event: status`` (``{"status": ...}``) on each change and ``event: end`` when the build is over.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import httpx

from envyard.builder.errors import ArtifactIntegrityError, EnvyardError, ServiceError
from envyard.cli.output import emit_final, rich_console
from envyard.worker.client import RETRYABLE_STATUS, ApiClient, error_from_problem

__all__ = [
    "OUTAGE_SECONDS",
    "POLL_SECONDS",
    "STREAM_READ_TIMEOUT",
    "TERMINAL",
    "BuildCanceledError",
    "BuildFailedError",
    "BuildFollower",
    "BuildProgress",
    "SseEvent",
    "download_artifact",
    "follow_build",
    "iter_sse",
]

TERMINAL = frozenset({"completed", "failed", "canceled"})
POLL_SECONDS = 1.0
STREAM_READ_TIMEOUT = 30.0  # the server sends nothing while a queued build waits: reconnect (after a poll) this often
OUTAGE_SECONDS = 120.0  # how long a followed build survives a server that does not answer


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None = None


def iter_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Events from the lines of a ``text/event-stream`` body (the subset of the format envyard sends)."""
    event, last_id = "message", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data), last_id)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            last_id = value


@dataclass
class BuildFollower:
    """Follows build ``build_id`` to its end; ``on_log`` gets new log lines and ``on_status`` every status seen."""

    client: ApiClient
    build_id: int
    on_log: Callable[[list[str]], None] = lambda lines: None
    on_status: Callable[[str], None] = lambda status: None
    last_event_id: int = 0

    def fetch(self) -> dict[str, Any]:
        return dict(self.client.json("GET", f"/api/v1/builds/{self.build_id}"))

    def run(self) -> dict[str, Any]:
        """The build once it is completed, failed or canceled."""
        saved, self.client.retry_seconds = self.client.retry_seconds, OUTAGE_SECONDS
        try:
            while True:
                if self._stream():
                    return self.fetch()
                build = self.fetch()  # the stream dropped: poll, then reconnect where it stopped
                self.on_status(build["status"])
                if build["status"] in TERMINAL:
                    return build
                time.sleep(POLL_SECONDS)
        finally:
            self.client.retry_seconds = saved

    def _stream(self) -> bool:
        """Read the event stream until ``end`` (True) or until it drops (False)."""
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(self.last_event_id)}
        timeout = httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT)
        try:
            with self.client.http.stream("GET", f"/api/v1/builds/{self.build_id}/logs", params={"follow": "true"},
                                         headers=headers, timeout=timeout) as response:
                if response.status_code in RETRYABLE_STATUS:
                    return False
                if response.status_code >= 400:
                    response.read()
                    raise error_from_problem(response)
                for event in iter_sse(response.iter_lines()):
                    if event.event == "log":
                        self.last_event_id = int(event.id or self.last_event_id)
                        self.on_log(event.data.split("\n"))
                    elif event.event == "status":
                        self.on_status(json.loads(event.data)["status"])
                    elif event.event == "end":
                        return True
        except httpx.TransportError:
            pass
        return False


@dataclass
class BuildProgress:
    """Stage, elapsed time, log line count and last log line of a followed build, on stderr.

    A live line on a terminal; otherwise one plain line per status change.
    """

    build_id: int
    status: str | None = None
    lines: int = 0
    last_line: str = ""
    started: float = field(default_factory=time.monotonic)
    stage_started: float = field(default_factory=time.monotonic)
    console: Any = None
    live: Any = None
    spinner: Any = None

    def __enter__(self) -> BuildProgress:
        self.console = rich_console(stderr=True)
        if self.console.is_terminal:
            from rich.live import Live
            from rich.spinner import Spinner

            self.spinner = Spinner("dots")
            self.live = Live(self, console=self.console, refresh_per_second=8, transient=True)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def elapsed(self, since: float | None = None) -> str:
        seconds = time.monotonic() - (self.started if since is None else since)
        return f"{seconds:.0f} s" if seconds < 120 else f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"

    def log(self, lines: list[str]) -> None:
        self.lines += len(lines)
        self.last_line = next((line.strip() for line in reversed(lines) if line.strip()), self.last_line)

    def set_status(self, status: str) -> None:
        if status == self.status:
            return
        if self.live is not None and self.status is not None:
            self.console.print(f"[green]✓[/] {self.status} [dim]{self.elapsed(self.stage_started)}[/]")
        elif self.live is None:
            click.echo(f"build {self.build_id}: {status} ({self.elapsed()}, {self.lines} log lines)", err=True)
        self.status, self.stage_started = status, time.monotonic()

    def __rich__(self) -> Any:
        from rich.text import Text

        text = Text(f"build {self.build_id} ", style="bold")
        text.append(f"{self.status or 'waiting'} ", style="cyan")
        text.append(f"{self.elapsed()} · {self.lines} log lines", style="dim")
        if self.last_line:
            width = max(self.console.width - len(text) - 8, 10)
            last = self.last_line if len(self.last_line) <= width else self.last_line[: width - 1] + "…"
            text.append(f" · {last}")
        self.spinner.update(text=text)
        return self.spinner


class BuildFailedError(EnvyardError):
    """A followed build that ended failed: its stage, message and hint."""

    code = "build-failed"
    title = "Build failed"
    status = 422
    exit_code = 4


class BuildCanceledError(EnvyardError):
    """A followed build that was canceled before it completed."""

    code = "build-canceled"
    title = "Build canceled"
    status = 409
    exit_code = 10


def follow_build(ctx: click.Context, client: ApiClient, build: dict[str, Any], json_output: bool) -> dict[str, Any]:
    """Wait for ``build`` to end with a progress display; raise if it failed or was canceled.

    With ``json_output`` the final build is printed as JSON (also when it failed: the error is then only the
    stderr line and the exit code).
    """
    build_id = build["id"]
    try:
        with BuildProgress(build_id) as progress:
            progress.set_status(build["status"])
            final = BuildFollower(client, build_id, on_log=progress.log, on_status=progress.set_status).run()
            progress.set_status(final["status"])
    except KeyboardInterrupt:
        click.echo(f"build {build_id} goes on on the server (stop it: envyard build cancel {build_id})", err=True)
        raise
    final["reused"] = build.get("reused", False)  # GET /builds/{id} cannot know that this submission reused it
    if json_output:
        emit_final(ctx, final)
    if final["status"] == "failed":
        error = final.get("error") or {}
        stage = f" during {error['stage']}" if error.get("stage") else ""
        raise BuildFailedError(f"build {build_id} failed{stage}: {error.get('message') or 'no error recorded'}",
                               hint=error.get("hint") or f"see its log: envyard build logs {build_id}")
    if final["status"] == "canceled":
        raise BuildCanceledError(f"build {build_id} of {final['environment']} was canceled before it completed",
                                 hint="submitting the spec again queues a new build")
    return final


def download_artifact(client: ApiClient, build_id: int, artifact: dict[str, Any], target: Path) -> int:
    """Stream ``artifact`` (an entry of the build's artifact list) to ``target`` and check its sha256; its size."""
    name = artifact["name"]
    expected = artifact["digest"].removeprefix("sha256:")
    partial = target.with_name(target.name + ".part")
    digest, size = hashlib.sha256(), 0
    try:
        with client.http.stream("GET", f"/api/v1/builds/{build_id}/artifacts/{quote(name, safe='/')}",
                                follow_redirects=True) as response:
            if response.status_code >= 400:
                response.read()
                raise error_from_problem(response)
            with partial.open("wb") as handle:
                for chunk in response.iter_bytes(1024 * 1024):
                    digest.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
    except httpx.TransportError as exc:
        partial.unlink(missing_ok=True)
        raise ServiceError(f"downloading {name} of build {build_id} failed: {type(exc).__name__}: {exc}",
                           hint="run the download again") from None
    except OSError as exc:
        raise EnvyardError(f"cannot write {partial}: {exc.strerror or exc}", file=target,
                           hint="choose a writable file or directory with -o") from None
    if digest.hexdigest() != expected:
        partial.unlink()
        raise ArtifactIntegrityError(f"{name} of build {build_id} has sha256 {digest.hexdigest()}, the server "
                                     f"lists {expected}", hint="download it again; if that fails too, the "
                                     "artifact store is damaged")
    partial.replace(target)
    return size
