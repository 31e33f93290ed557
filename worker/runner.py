"""The worker loop: claim a build, run it in a child process, ship its log, heartbeat, upload, publish.

Each build runs as ``python -m envyard.worker.job`` in its own process group, so a cancel, a lost lease or a time
limit stops the stage and every subprocess it started. The child watches its stdin and ends itself when
the worker dies (SIGKILL included); the lease then expires and another worker takes the build over.

The child runs in the worker's build sandbox (:mod:`worker.sandbox`) with an allow-listed environment and no
inherited descriptor but its event pipe. Each attempt builds in ``<work root>/build-N-attempt-M-L/``, locked
(``flock`` on the ``.lock`` file beside it) for as long as its worker lives; directories whose lock nobody holds
belonged to a worker that died and are removed when a worker starts and after each attempt
(:func:`sweep_work_root`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from envyard.builder.errors import DiskFullError, EnvyardError, LeaseLostError
from envyard.worker.client import ApiClient
from envyard.worker.job_io import MANIFEST_PATH, JobManifest, JobSpec
from envyard.worker.protocol import ArtifactEntry, Job, StageName
from envyard.worker.sandbox import Sandbox, child_environment, sandbox_for
from envyard.worker.settings import WorkerSettings

__all__ = ["ONCE_EXIT_CODES", "BuildRunner", "Outcome", "WorkerOptions", "parse_pauses", "run_once", "run_worker",
           "sweep_work_root"]

log = logging.getLogger(__name__)
LOG_FLUSH_BYTES = 256 * 1024


@dataclass
class WorkerOptions:
    api_url: str
    token: str
    name: str
    work_dir: Path
    settings: WorkerSettings
    platforms: list[str] | None = None
    concurrency: int = 1
    wait_seconds: float = 10.0
    kill_grace_seconds: float = 5.0
    extra_env: dict[str, str] = field(default_factory=dict)
    pause_at: dict[str, float] = field(default_factory=dict)  # stage -> seconds held there (settings.test_stage_delay)
    sandbox: Sandbox | None = None  # None: the one the settings ask for (worker.sandbox.sandbox_for)


def parse_pauses(text: str | None) -> dict[str, float]:
    """``solving=30,pushing=5`` -> {stage: seconds}: hold builds in a stage (the test-only setting
    ``test_stage_delay``, :class:`~envyard.worker.settings.WorkerSettings`)."""
    pauses = {}
    for item in filter(None, (text or "").split(",")):
        stage, _, seconds = item.partition("=")
        pauses[stage.strip()] = float(seconds)
    return pauses


LOCK_SUFFIX = ".lock"

Outcome = Literal["completed", "failed", "canceled", "lost", "stopped", "none"]
#: ``envyard worker --once`` exits with: 0 the build completed or was canceled (it is final), 1 it failed (and
#: the server recorded it), 75 (EX_TEMPFAIL) nothing was claimed, the lease was lost or the worker was stopped:
#: the build is not finished by this process; the server's lease expiry requeues it.
ONCE_EXIT_CODES: dict[str, int] = {"completed": 0, "canceled": 0, "failed": 1, "lost": 75, "stopped": 75,
                                   "none": 75}


def _try_lock(path: Path, create: bool) -> int | None:
    """A descriptor holding an exclusive flock on ``path``, or None when another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def sweep_work_root(work_root: Path) -> int:
    """Remove the build directories under ``work_root`` no live worker holds (left by a worker that died, with
    their temporary files and spools); the number removed. Safe with other workers sharing ``work_root``:
    a worker locks an attempt's ``.lock`` file before creating its directory and removes both before unlocking."""
    removed = 0
    try:
        entries = list(os.scandir(work_root))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not entry.name.startswith("build-") or entry.name.endswith(LOCK_SUFFIX):
            continue
        lock = Path(entry.path + LOCK_SUFFIX)
        fd = _try_lock(lock, create=False)
        if fd is None and lock.exists():
            continue  # a live attempt (or one just finishing)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                Path(entry.path).unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
            removed += 1
        finally:
            if fd is not None:
                os.close(fd)
    for entry in entries:  # lock files whose directory is gone and whose worker is too
        if entry.name.startswith("build-") and entry.name.endswith(LOCK_SUFFIX) \
                and not os.path.lexists(entry.path[: -len(LOCK_SUFFIX)]):
            fd = _try_lock(Path(entry.path), create=False)
            if fd is not None:
                Path(entry.path).unlink(missing_ok=True)
                os.close(fd)
    if removed:
        log.info("removed %d build directories left in %s by workers that stopped", removed, work_root)
    return removed


def run_worker(options: WorkerOptions, stop: threading.Event) -> None:
    """Run ``options.concurrency`` claim loops until ``stop`` is set."""
    if options.sandbox is None:
        options.sandbox = sandbox_for(options.settings, os.environ)
    options.work_dir.mkdir(parents=True, exist_ok=True)
    sweep_work_root(options.work_dir)
    client = ApiClient(options.api_url, options.token, stop=stop)
    slots = [threading.Thread(target=_claim_loop, args=(client, options, stop, slot), name=f"envyard-slot-{slot}")
             for slot in range(options.concurrency)]
    for thread in slots:
        thread.start()
    for thread in slots:
        thread.join()
    client.close()


def run_once(options: WorkerOptions, stop: threading.Event, claim_seconds: float) -> Outcome:
    """Claim one build (waiting up to ``claim_seconds`` for one), run it, and say how it went."""
    if options.sandbox is None:
        options.sandbox = sandbox_for(options.settings, os.environ)
    options.work_dir.mkdir(parents=True, exist_ok=True)
    sweep_work_root(options.work_dir)
    client = ApiClient(options.api_url, options.token, stop=stop)
    deadline = time.monotonic() + claim_seconds
    try:
        while not stop.is_set():
            wait = max(0.0, min(options.wait_seconds, deadline - time.monotonic()))
            try:
                job = client.claim(options.name, options.platforms, wait)
            except EnvyardError as exc:
                log.warning("claim failed: %s", exc.one_line())
                if time.monotonic() >= deadline or exc.details.get("status") in (401, 403):
                    return "none"
                stop.wait(2.0)
                continue
            if job is not None:
                runner = BuildRunner(client, options, job, stop, options.name)
                runner.run()
                return runner.outcome
            if time.monotonic() >= deadline:
                return "none"
        return "stopped"
    finally:
        client.close()


def _claim_loop(client: ApiClient, options: WorkerOptions, stop: threading.Event, slot: int) -> None:
    name = options.name if options.concurrency == 1 else f"{options.name}/{slot}"
    while not stop.is_set():
        try:
            job = client.claim(name, options.platforms, options.wait_seconds)
        except EnvyardError as exc:
            log.warning("claim failed: %s", exc.one_line())
            stop.wait(2.0)
            continue
        if job is not None:
            BuildRunner(client, options, job, stop, name).run()


class BuildRunner:
    """One claimed build, from child process start to completed, failed or canceled."""

    def __init__(self, client: ApiClient, options: WorkerOptions, job: Job, stop: threading.Event,
                 name: str) -> None:
        self.client, self.options, self.job, self.stop, self.name = client, options, job, stop, name
        self.build_id = job.build_id
        self.lease_id = job.lease_id
        self.job_dir = options.work_dir / f"build-{self.build_id}-attempt-{job.attempt}-{self.lease_id[:8]}"
        self._lock_fd: int | None = None
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.finished = threading.Event()
        self.error: dict[str, Any] | None = None
        self.outcome: Outcome = "stopped"
        self.stage = "solving"
        self.child: subprocess.Popen[bytes] | None = None
        self._log_lock = threading.Lock()
        self._log_buffer: list[str] = []
        self._log_size = 0

    # --- log shipping -----------------------------------------------------------------------------------

    def log(self, line: str) -> None:
        with self._log_lock:
            self._log_buffer.append(line if line.endswith("\n") else line + "\n")
            self._log_size += len(line)
            full = self._log_size >= LOG_FLUSH_BYTES
        if full:
            self.flush_log()

    def flush_log(self) -> None:
        with self._log_lock:
            text, self._log_buffer, self._log_size = "".join(self._log_buffer), [], 0
        if text and not self.lost.is_set():
            self._call(self.client.append_logs, self.build_id, self.lease_id, text)

    def _call(self, method: Any, *args: Any) -> Any:
        try:
            return method(*args)
        except LeaseLostError as exc:
            log.warning("build %s: %s", self.build_id, exc.one_line())
            self.lost.set()
        except EnvyardError as exc:
            log.warning("build %s: %s", self.build_id, exc.one_line())
        return None

    # --- background threads -----------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        while not self.finished.wait(self.job.heartbeat_seconds):
            reply = self._call(self.client.heartbeat, self.build_id, self.lease_id)
            if reply is not None and reply.cancel_requested:
                self.cancel.set()
            self.flush_log()
            if self.lost.is_set():
                return

    def _pump(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            self.log(raw.decode("utf-8", errors="replace"))

    def _events(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as events:
            for raw in events:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if event.get("event") == "stage":
                    if event.get("stage") != self.stage:
                        self.stage = event["stage"]
                        self._call(self.client.stage, self.build_id, self.lease_id, cast(StageName, self.stage))
                    self._hold(self.stage)
                elif event.get("event") == "error":
                    self.error = event

    def _hold(self, stage: str) -> None:
        """Keep the build in ``stage`` for the configured pause (the child is stopped meanwhile)."""
        seconds = self.options.pause_at.get(stage)
        if not seconds:
            return
        child = self.child
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (self.cancel.is_set() or self.lost.is_set()):
            time.sleep(0.05)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGCONT)

    # --- the build --------------------------------------------------------------------------------------

    def run(self) -> None:
        heartbeat = threading.Thread(target=self._heartbeat, name=f"heartbeat-{self.build_id}", daemon=True)
        heartbeat.start()
        try:
            self.log(f"envyard: worker {self.name} runs build {self.build_id} (attempt {self.job.attempt})")
            returncode = self._run_child()
            self._publish(returncode)
        except (EnvyardError, OSError) as caught:
            exc = caught if isinstance(caught, EnvyardError) else DiskFullError.find(caught, self.job_dir)
            if exc is None:
                raise
            if not self.lost.is_set():
                self.log(f"envyard: {exc.one_line()}")
                self.flush_log()
                self._call(self.client.fail, self.build_id, self.lease_id, exc.code, self.stage, exc.message,
                           exc.hint)
                self.outcome = "failed"
        finally:
            self.finished.set()
            self.flush_log()
            heartbeat.join(timeout=30)
            self._release_job_dir()
            sweep_work_root(self.options.work_dir)
            if self.lost.is_set():
                self.outcome = "lost"

    def _claim_job_dir(self) -> None:
        """Lock the attempt's ``.lock`` file, then create its directory (see :func:`sweep_work_root`)."""
        self.options.work_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _try_lock(Path(str(self.job_dir) + LOCK_SUFFIX), create=True)
        if self._lock_fd is None:
            raise EnvyardError(f"{self.job_dir} is in use by another worker", hint="retry the build")
        shutil.rmtree(self.job_dir, ignore_errors=True)
        self.job_dir.mkdir()

    def _release_job_dir(self) -> None:
        if self._lock_fd is None:
            return
        shutil.rmtree(self.job_dir, ignore_errors=True)
        Path(str(self.job_dir) + LOCK_SUFFIX).unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None

    def _run_child(self) -> int:
        self._claim_job_dir()
        spec = JobSpec.from_job(self.job, self.options.settings)
        (self.job_dir / "job.json").write_text(spec.model_dump_json(), encoding="utf-8")
        (self.job_dir / "tmp").mkdir()
        sandbox = self.options.sandbox or Sandbox("none")
        sandbox.prepare(self.job_dir)
        read_fd, write_fd = os.pipe()
        argv = [sys.executable, "-m", "envyard.worker.job", str(self.job_dir), "--events-fd", str(write_fd),
                "--exit-with-stdin"]
        try:
            child = subprocess.Popen(
                sandbox.command(argv, self.job_dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, close_fds=True, pass_fds=(write_fd,), start_new_session=True,
                cwd=self.job_dir, env=child_environment(self.options.settings, os.environ, self.job_dir,
                                                        self.options.extra_env),
                **sandbox.popen_options(),
            )
        finally:
            os.close(write_fd)
        self.child = child
        readers = [threading.Thread(target=self._pump, args=(child.stdout,), daemon=True),
                   threading.Thread(target=self._events, args=(read_fd,), daemon=True)]
        for reader in readers:
            reader.start()
        while child.poll() is None:
            if self.cancel.is_set() or self.lost.is_set() or self.stop.is_set():
                reason = "canceled" if self.cancel.is_set() else "lease lost" if self.lost.is_set() else "stopping"
                self.log(f"envyard: stopping the {self.stage} stage ({reason})")
                self._kill(child)
                break
            time.sleep(0.1)
        returncode = child.wait()
        for reader in readers:
            reader.join(timeout=10)
        if child.stdin:
            child.stdin.close()
        return returncode

    def _kill(self, child: subprocess.Popen[bytes]) -> None:
        """SIGTERM the child's process group, SIGKILL what is left after the grace period."""
        for sig, wait in ((signal.SIGTERM, self.options.kill_grace_seconds), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(child.pid, sig)
                os.killpg(child.pid, signal.SIGCONT)  # a stopped group must run to act on SIGTERM
            except ProcessLookupError:
                return
            try:
                child.wait(timeout=wait)
                os.killpg(child.pid, signal.SIGKILL)  # stragglers in the group
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue
            return

    def _confirm_cancel(self) -> None:
        self.log("envyard: build canceled")
        self.flush_log()
        self._call(self.client.canceled, self.build_id, self.lease_id)
        self.outcome = "canceled"

    def _upload_partial(self) -> list[ArtifactEntry]:
        """The lock files a build that failed after solving listed in ``out/partial.json`` (see worker.job),
        uploaded: the failure records them as partial artifacts. Empty when there are none or uploading failed."""
        path = self.job_dir / "out" / "partial.json"
        if self.lost.is_set() or not path.is_file():
            return []
        artifacts = JobManifest.model_validate_json(path.read_text(encoding="utf-8")).artifacts
        for artifact in artifacts:
            if self._call(self.client.upload, self.build_id, self.lease_id, self.job_dir / artifact.path,
                          artifact.sha256, artifact.size) is None:
                return []
        self.log(f"envyard: kept the {len(artifacts)} lock files solved before the failure (partial artifacts)")
        self.flush_log()
        return [a.entry() for a in artifacts]

    def _publish(self, returncode: int) -> None:
        if self.lost.is_set():
            return
        if self.cancel.is_set():
            return self._confirm_cancel()
        if self.stop.is_set() and returncode != 0:
            return  # the worker is shutting down; the lease expires and another worker takes the build
        if returncode != 0:
            error = self.error or {"code": "internal", "message": f"the build process exited with {returncode}",
                                   "hint": "see the build log"}
            self.flush_log()
            partial = self._upload_partial()
            self._call(self.client.fail, self.build_id, self.lease_id, error.get("code", "internal"),
                       error.get("stage") or self.stage, error.get("message", ""), error.get("hint"), partial)
            self.outcome = "failed"
            return
        self.stage = "pushing"
        self._call(self.client.stage, self.build_id, self.lease_id, "pushing")
        self._hold("pushing")
        manifest = JobManifest.model_validate_json((self.job_dir / MANIFEST_PATH).read_text(encoding="utf-8"))
        sent: set[str] = set()
        uploaded = 0
        for artifact in manifest.artifacts:
            if self.lost.is_set():
                return None
            if self.cancel.is_set():
                return self._confirm_cancel()
            if artifact.sha256 in sent:
                continue
            sent.add(artifact.sha256)
            if self.client.upload(self.build_id, self.lease_id, self.job_dir / artifact.path, artifact.sha256,
                                  artifact.size):
                uploaded += artifact.size
        self.log(f"envyard: stored {len(sent)} artifacts ({uploaded} bytes uploaded)")
        self.flush_log()
        if self._call(self.client.complete, self.build_id, self.lease_id, manifest.completion()) is not None:
            self.outcome = "completed"
