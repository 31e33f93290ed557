"""A real Docker-API daemon for tests: ``podman system service`` on a private socket and storage, stopped by PID.

Everything podman would otherwise take from the host (storage, run state, events,
containers.conf, registries.conf) points into one temporary directory, passed through
the subprocess environment and flags; the test process's own ``os.environ`` is untouched.
Only image operations (load, inspect, tag) are expected to work: no containers are run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import stop_process

_CONTAINERS_CONF = """\
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{root}/events.log"
image_copy_tmp_dir = "{root}/tmp"
tmp_dir = "{root}/tmp"
volume_path = "{root}/volumes"

[network]
network_config_dir = "{root}/networks"
"""

_STORAGE_CONF = """\
[storage]
driver = "vfs"
graphroot = "{root}/storage"
runroot = "{root}/run"
"""

_REGISTRIES_CONF = """\
unqualified-search-registries = []
short-name-mode = "disabled"
"""


def podman_available() -> bool:
    return shutil.which("podman") is not None


def wait_for_socket(path: Path, timeout: float = 30.0) -> None:
    """Wait until something answers ``GET /_ping`` on the unix socket ``path``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                try:
                    sock.connect(str(path))
                    sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: podman\r\nConnection: close\r\n\r\n")
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        return
                except OSError:
                    pass
        time.sleep(0.1)
    raise TimeoutError(f"podman did not answer on {path} after {timeout} s")


@contextmanager
def podman_service(timeout: float = 30.0) -> Iterator[str]:
    """Run ``podman system service`` with private storage; yields its ``unix://`` URL.

    The temporary directory sits directly under the system temp dir, so the socket path
    stays well below the 108-byte limit of unix socket addresses.
    """
    executable = shutil.which("podman")
    if executable is None:
        raise RuntimeError("podman not found")
    root = Path(tempfile.mkdtemp(prefix="envyard-podman-"))
    try:
        for sub in ("tmp", "volumes", "networks", "storage", "run"):
            (root / sub).mkdir()
        (root / "containers.conf").write_text(_CONTAINERS_CONF.format(root=root))
        (root / "storage.conf").write_text(_STORAGE_CONF.format(root=root))
        (root / "registries.conf").write_text(_REGISTRIES_CONF)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root),
            "TMPDIR": str(root / "tmp"),
            "XDG_RUNTIME_DIR": str(root / "run"),
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_DATA_HOME": str(root / "data"),
            "CONTAINERS_CONF": str(root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
        }
        sock = root / "podman.sock"
        command = [
            executable,
            "--root", str(root / "storage"),
            "--runroot", str(root / "run"),
            "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            "--tmpdir", str(root / "tmp"),
            "system", "service", "--time=0", f"unix://{sock}",
        ]  # fmt: skip
        with open(root / "podman.log", "wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            try:
                wait_for_socket(sock, timeout)
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}\n{(root / 'podman.log').read_text(errors='replace')}") from None
            yield f"unix://{sock}"
        finally:
            stop_process(process, timeout=15)
    finally:
        shutil.rmtree(root, ignore_errors=True)
