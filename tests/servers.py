"""Real servers for tests, started on 127.0.0.1 and stopped by PID."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a server started by a test: SIGTERM, then SIGKILL if it has not gone after ``timeout``."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextmanager
def moto_s3(log_dir: Path) -> Iterator[str]:
    """An S3 endpoint (moto_server) on loopback; yields its URL."""
    executable = shutil.which("moto_server")
    if executable is None:
        raise RuntimeError("moto_server not found: pip install 'moto[server]'")
    port = free_port()
    with open(log_dir / "moto.log", "wb") as log:
        process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


def docker_registry_executable() -> str | None:
    """The distribution registry binary (Debian's ``docker-registry``), or None when it is not installed."""
    found = shutil.which("docker-registry")
    if found is None and Path("/usr/bin/docker-registry").is_file():
        found = "/usr/bin/docker-registry"
    return found


@contextmanager
def docker_registry(tmp_dir: Path, *, htpasswd: Path | None = None) -> Iterator[str]:
    """A distribution-spec registry on loopback (plain HTTP, filesystem storage); yields ``127.0.0.1:<port>``.

    With ``htpasswd`` (bcrypt lines) every request needs basic auth.
    """
    executable = docker_registry_executable()
    if executable is None:
        raise RuntimeError("docker-registry not found: apt-get install docker-registry")
    port = free_port()
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {json.dumps(str(tmp_dir / 'storage'))}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
    ]
    if htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: envyard-test", f"    path: {json.dumps(str(htpasswd))}"]
    config = tmp_dir / "registry.yml"
    config.write_text("\n".join(lines) + "\n")
    with open(tmp_dir / "registry.log", "wb") as log:
        process = subprocess.Popen([executable, "serve", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20.0
        while True:
            if process.poll() is not None:
                log_text = (tmp_dir / "registry.log").read_text(errors="replace")
                raise RuntimeError(f"docker-registry exited with {process.returncode}:\n{log_text}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"docker-registry does not listen on 127.0.0.1:{port} after 20 s")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(process)
