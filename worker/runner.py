"""The worker loop: claim a build, run it in a child process, ship its log, heartbeat, upload, publish.

Each build runs as ``python -m worker.job`` in its own process group, so a cancel, a lost lease or a time
limit stops the stage and every subprocess it started. The child watches its stdin and ends itself when
the worker dies (SIGKILL included); the lease then expires and another worker takes the build over.
"""

from __future__ import annotations

import contextlib
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
from typing import Any

from builder.errors import DiskFullError, EnvyardError, LeaseLostError
from builder.settings import Settings
from worker.client import ApiClient

log = logging.getLogger("envyard.worker")
LOG_FLUSH_BYTES = 256 * 1024


@dataclass
class WorkerOptions:
    api_url: str
    token: str
    name: str
    work_dir: Path
    settings: Settings
    platforms: list[str] | None = None
    concurrency: int = 1
    wait_seconds: float = 10.0
    kill_grace_seconds: float = 5.0
    extra_env: dict[str, str] = field(default_factory=dict)
    pause_at: dict[str, float] = field(default_factory=dict)  # stage -> seconds held there (tests of cancel)


def parse_pauses(text: str | None) -> dict[str, float]:
    """``solving=30,pushing=5`` -> {stage: seconds}: hold builds in a stage (ENVYARD_TEST_STAGE_DELAY)."""
    pauses = {}
    for item in filter(None, (text or "").split(",")):
        stage, _, seconds = item.partition("=")
        pauses[stage.strip()] = float(seconds)
    return pauses


def child_environment(settings: Settings, extra: dict[str, str]) -> dict[str, str]:
    """The child's environment: the worker's, with its builder settings spelled as ENVYARD_* variables."""
    env = dict(os.environ)
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
        env[f"ENVYARD_{name.upper()}"] = text
    env.update(extra)
    return env


def run_worker(options: WorkerOptions, stop: threading.Event) -> None:
    """Run ``options.concurrency`` claim loops until ``stop`` is set."""
    client = ApiClient(options.api_url, options.token, stop=stop)
    slots = [threading.Thread(target=_claim_loop, args=(client, options, stop, slot), name=f"envyard-slot-{slot}")
             for slot in range(options.concurrency)]
    for thread in slots:
        thread.start()
    for thread in slots:
        thread.join()
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

    def __init__(self, client: ApiClient, options: WorkerOptions, job: dict[str, Any], stop: threading.Event,
                 name: str) -> None:
        self.client, self.options, self.job, self.stop, self.name = client, options, job, stop, name
        self.build_id: int = job["build_id"]
        self.lease_id: str = job["lease_id"]
        self.job_dir = options.work_dir / f"build-{self.build_id}-attempt-{job['attempt']}"
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.finished = threading.Event()
        self.error: dict[str, Any] | None = None
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
        interval = float(self.job.get("heartbeat_seconds", 2.0))
        while not self.finished.wait(interval):
            reply = self._call(self.client.heartbeat, self.build_id, self.lease_id)
            if reply and reply.get("cancel_requested"):
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
                        self._call(self.client.stage, self.build_id, self.lease_id, self.stage)
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
            self.log(f"envyard: worker {self.name} runs build {self.build_id} (attempt {self.job['attempt']})")
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
        finally:
            self.finished.set()
            self.flush_log()
            heartbeat.join(timeout=30)
            shutil.rmtree(self.job_dir, ignore_errors=True)

    def _job_json(self) -> dict[str, Any]:
        options = self.job["options"]
        return {"build_id": self.build_id, "spec_text": self.job["spec_text"],
                "spec_filename": self.job["spec_filename"], "platforms": self.job["platforms"],
                "channel_alias": options.get("channel_alias"), "image": options.get("image", True),
                "archive": options.get("archive", True), "sbom": options.get("sbom"),
                "image_name": self.job["image_name"], "env_prefix": self.options.settings.env_prefix}

    def _run_child(self) -> int:
        shutil.rmtree(self.job_dir, ignore_errors=True)
        self.job_dir.mkdir(parents=True)
        (self.job_dir / "job.json").write_text(json.dumps(self._job_json()))
        tmp = self.job_dir / "tmp"
        tmp.mkdir()
        read_fd, write_fd = os.pipe()
        child = subprocess.Popen(
            [sys.executable, "-m", "worker.job", str(self.job_dir), "--events-fd", str(write_fd),
             "--exit-with-stdin"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
            start_new_session=True,
            env={**child_environment(self.options.settings, self.options.extra_env), "TMPDIR": str(tmp)},
        )
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
            self._call(self.client.fail, self.build_id, self.lease_id, error.get("code", "internal"),
                       error.get("stage") or self.stage, error.get("message", ""), error.get("hint"))
            return
        self.stage = "pushing"
        self._call(self.client.stage, self.build_id, self.lease_id, "pushing")
        self._hold("pushing")
        manifest = json.loads((self.job_dir / "out" / "manifest.json").read_text())
        sent: set[str] = set()
        uploaded = 0
        for artifact in manifest["artifacts"]:
            if self.lost.is_set():
                return None
            if self.cancel.is_set():
                return self._confirm_cancel()
            if artifact["sha256"] in sent:
                continue
            sent.add(artifact["sha256"])
            if self.client.upload(self.build_id, self.lease_id, self.job_dir / artifact["path"],
                                  artifact["sha256"], artifact["size"]):
                uploaded += artifact["size"]
        self.log(f"envyard: stored {len(sent)} artifacts ({uploaded} bytes uploaded)")
        self.flush_log()
        fields = ("kind", "name", "platform", "sha256", "size", "media_type")
        self._call(self.client.complete, self.build_id, self.lease_id, {
            "artifacts": [{key: a.get(key) for key in fields} for a in manifest["artifacts"]],
            "packages": manifest["packages"], "image_digest": manifest.get("image_digest"),
            "lock_sha256": manifest.get("lock_sha256"),
        })
