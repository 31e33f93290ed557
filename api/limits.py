"""What one token may hold at once, so one user cannot starve the others, the workers or ``/healthz``.

* Log streams: at most ``max_log_streams_per_token`` open per token; they share one poller per followed build
  (:class:`api.services.logs.LogHub`) and hold no database connection.
* Submissions: at most ``max_submissions_per_token`` specs of one token being parsed at once, in their own
  ``spec_check_processes`` processes (a slow parse holds no thread serving requests, no database connection, and
  not this process's GIL, which would slow every other request down).
* Builds waiting: at most ``max_waiting_builds_per_token`` queued or running (checked in the submission's
  transaction, :func:`api.services.builds.submit_build`).

Beyond a limit the answer is a 429 problem naming the limit and its current use, with ``Retry-After``. The counts
are per server process: each replica of a deployment applies the limits on its own. Admin and worker tokens (not
restricted to namespaces, trusted with the whole service) are not limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from fastapi import Request
from sqlalchemy import Engine

from envyard.api.auth.principals import Principal
from envyard.api.services.builds import CheckedSpec, check_submission
from envyard.api.services.logs import LogHub
from envyard.api.services.specs import submission_policy
from envyard.api.settings import ServiceSettings
from envyard.builder.errors import SpecError, TooManyRequestsError
from envyard.builder.policy import Policy

__all__ = ["LoadControls", "Slot", "TokenLimits", "principal_key"]

STREAM_RETRY_SECONDS = 10
SUBMISSION_RETRY_SECONDS = 2
CHECKER_NICENESS = 10
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Slot:
    """One unit of a token's limit, given back once by :meth:`release` (later calls do nothing)."""

    def __init__(self, limits: TokenLimits | None, kind: str, key: str) -> None:
        self._limits, self._kind, self._key = limits, kind, key
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        if self._limits is not None:
            self._limits.give_back(self._kind, self._key)


class TokenLimits:
    """Counts of what each token holds, by kind ("log streams open", ...); thread-safe."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def acquire(self, kind: str, key: str, maximum: int, setting: str, retry_after: int) -> Slot:
        """A slot of ``kind`` for ``key``, or TooManyRequestsError (429) when ``maximum`` are held."""
        with self._lock:
            held = self._counts.get((kind, key), 0)
            if held >= maximum:
                raise TooManyRequestsError.limit_reached(kind, setting, maximum, held, retry_after)
            self._counts[(kind, key)] = held + 1
        return Slot(self, kind, key)

    def give_back(self, kind: str, key: str) -> None:
        with self._lock:
            held = self._counts.get((kind, key), 0) - 1
            if held > 0:
                self._counts[(kind, key)] = held
            else:
                self._counts.pop((kind, key), None)

    def held(self, kind: str, key: str) -> int:
        with self._lock:
            return self._counts.get((kind, key), 0)


def principal_key(request: Request, principal: Principal) -> str:
    """Whose limits a request counts against: its token, or (anonymous) its client address."""
    if principal.token_id is not None:
        return f"token:{principal.token_id}"
    client = request.client.host if request.client else "unknown"
    return f"anonymous:{client}"


def _start_checker(server_pid: int) -> None:
    """In a spec-check process: die with the server (a SIGKILLed server must leave no checker behind), and yield
    the CPU to the server (requests, workers' heartbeats) when it is scarce."""
    _die_with_parent()
    if os.getppid() != server_pid:  # the server died before the line above took effect
        os._exit(0)
    with contextlib.suppress(OSError):
        os.nice(CHECKER_NICENESS)


def _die_with_parent() -> None:
    """Linux's PR_SET_PDEATHSIG: SIGKILL this process when the process (thread) that started it ends."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class LoadControls:
    """The server's per-token limits, its log-stream hub and the processes that check submitted specs."""

    def __init__(self, settings: ServiceSettings, engine: Engine) -> None:
        self.settings = settings
        self.limits = TokenLimits()
        self.log_hub = LogHub(engine)
        self._checkers: ProcessPoolExecutor | None = None
        self._checkers_lock = threading.Lock()

    def _acquire(self, request: Request, principal: Principal, kind: str, maximum: int, setting: str,
                 retry_after: int) -> Slot:
        if not principal.restricted:  # admin and worker tokens
            return Slot(None, kind, "")
        return self.limits.acquire(kind, principal_key(request, principal), maximum, setting, retry_after)

    def stream_slot(self, request: Request, principal: Principal) -> Slot:
        return self._acquire(request, principal, "log streams open", self.settings.max_log_streams_per_token,
                             "max_log_streams_per_token", STREAM_RETRY_SECONDS)

    def _submit_check(self, filename: str, text: str, platforms: list[str],
                      channel_alias: str | None, rules: Policy | None) -> Future[CheckedSpec]:
        with self._checkers_lock:
            if self._checkers is None:  # started on the first submission; "spawn": this process has threads
                self._checkers = ProcessPoolExecutor(self.settings.spec_check_processes,
                                                     mp_context=multiprocessing.get_context("spawn"),
                                                     initializer=_start_checker, initargs=(os.getpid(),))
            try:
                return self._checkers.submit(check_submission, filename, text, platforms,
                                             submission_policy(self.settings), channel_alias, rules)
            except BrokenProcessPool:
                self._checkers.shutdown(wait=False, cancel_futures=True)
                self._checkers = None
                raise

    async def check_spec(self, request: Request, principal: Principal, filename: str, text: str,
                         platforms: Sequence[str], channel_alias: str | None = None,
                         rules: Policy | None = None) -> CheckedSpec:
        """Parse and validate a submitted spec in a spec-check process (no database connection is open);
        ``rules``: the admins' policy it is held to (every violation: one 422).
        The token's slot is held until the parse ends, even if the client goes away meanwhile."""
        slot = self._acquire(request, principal, "submissions being checked",
                             self.settings.max_submissions_per_token, "max_submissions_per_token",
                             SUBMISSION_RETRY_SECONDS)
        try:
            future = self._submit_check(filename, text, list(platforms), channel_alias, rules)
        except BaseException:
            slot.release()
            raise
        future.add_done_callback(lambda _done: slot.release())
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            with self._checkers_lock:  # the next submission starts fresh processes
                if self._checkers is not None:
                    self._checkers.shutdown(wait=False, cancel_futures=True)
                    self._checkers = None
            raise SpecError("the spec could not be checked: the process parsing it died (too large or too deep?)",
                            file=filename, hint="submit a smaller spec") from None

    def close(self) -> None:
        with self._checkers_lock:
            if self._checkers is not None:
                self._checkers.shutdown(wait=False, cancel_futures=True)
                self._checkers = None
