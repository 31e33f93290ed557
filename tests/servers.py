"""Real servers for tests, started on 127.0.0.1 and stopped by PID."""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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


# --- PostgreSQL -------------------------------------------------------------------------------------------------------

_POSTGRES_USER = "postgres"
_UNIX_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; leave room for the terminating NUL


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in path.parent.name.split(".") if part.isdigit())


def postgres_bin_dir() -> Path | None:
    """The directory with ``initdb`` and ``postgres``: the newest ``/usr/lib/postgresql/<version>/bin``, else PATH."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for bin_dir in candidates:
        if (bin_dir / "initdb").is_file() and (bin_dir / "postgres").is_file():
            return bin_dir
    initdb = shutil.which("initdb")
    if initdb is not None:
        bin_dir = Path(initdb).resolve().parent
        if (bin_dir / "postgres").is_file():
            return bin_dir
    return None


def _postgres_runs_as_other_user() -> bool:
    """initdb and postgres refuse to run as root; as root they run as the ``postgres`` user instead."""
    return os.geteuid() == 0


def postgres_available() -> bool:
    """True when a PostgreSQL server can be started for tests: binaries, psycopg and (as root) a postgres user."""
    if postgres_bin_dir() is None or importlib.util.find_spec("psycopg") is None:
        return False
    if _postgres_runs_as_other_user():
        try:
            pwd.getpwnam(_POSTGRES_USER)
        except KeyError:
            return False
    return True


def _traversable_by_others(path: Path) -> bool:
    """True when every directory from ``/`` down to ``path`` has the others-execute bit (as another user needs)."""
    path = path.resolve()
    return all(directory.stat().st_mode & stat.S_IXOTH for directory in (path, *path.parents))


def stop_postgres(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Stop a postmaster by PID: SIGINT (fast shutdown), then SIGKILL if it has not gone after ``timeout``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _log_tail(log_path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(no log: {error})"


@contextmanager
def postgres_server(tmp_dir: Path) -> Iterator[str]:
    """A throw-away PostgreSQL server on 127.0.0.1 (trust auth, no fsync) with a database ``envyard``.

    Yields the SQLAlchemy URL ``postgresql+psycopg://postgres@127.0.0.1:<port>/envyard``. The cluster lives under
    ``tmp_dir/postgres`` (or, when the postgres user cannot reach ``tmp_dir`` or the socket path would be too long, a
    fresh ``/tmp/envyard-pg-*`` directory removed afterwards); the server log is ``tmp_dir/postgres.log``.
    """
    import psycopg

    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL not found: apt-get install postgresql")
    as_other = _postgres_runs_as_other_user()
    account = pwd.getpwnam(_POSTGRES_USER) if as_other else pwd.getpwuid(os.geteuid())
    run_as: dict[str, Any] = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []} if as_other else {}
    port = free_port()
    tmp_dir = tmp_dir.resolve()
    base = tmp_dir / "postgres"
    socket_file = base / "socket" / f".s.PGSQL.{port}"
    created_base: Path | None = None
    if (as_other and not _traversable_by_others(tmp_dir)) or len(str(socket_file)) > _UNIX_SOCKET_PATH_MAX:
        created_base = base = Path(tempfile.mkdtemp(prefix="envyard-pg-", dir="/tmp"))
        base.chmod(0o755)
    data_dir, socket_dir = base / "data", base / "socket"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", HOME=str(base))
    log_path = tmp_dir / "postgres.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        for directory in (base, data_dir, socket_dir):
            directory.mkdir(mode=0o700 if directory is data_dir else 0o755, parents=True, exist_ok=True)
            os.chown(directory, account.pw_uid, account.pw_gid)
        with open(log_path, "ab") as log:
            initdb = [str(bin_dir / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", _POSTGRES_USER]
            initdb += ["--no-sync", "-E", "UTF8", "--locale=C"]
            result = subprocess.run(initdb, stdout=log, stderr=log, cwd=base, env=env, check=False, **run_as)
            if result.returncode != 0:
                raise RuntimeError(f"initdb exited with {result.returncode}:\n{_log_tail(log_path)}")
            command = [str(bin_dir / "postgres"), "-D", str(data_dir), "-k", str(socket_dir), "-h", "127.0.0.1"]
            command += ["-p", str(port), "-F", "-c", "fsync=off", "-c", "full_page_writes=off"]
            command += ["-c", "synchronous_commit=off", "-c", "max_connections=200"]
            process = subprocess.Popen(command, stdout=log, stderr=log, cwd=base, env=env, **run_as)
        deadline = time.monotonic() + 30.0
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"postgres exited with {process.returncode}:\n{_log_tail(log_path)}")
            try:
                with psycopg.connect(
                    host="127.0.0.1",
                    port=port,
                    user=_POSTGRES_USER,
                    dbname="postgres",
                    connect_timeout=2,
                    autocommit=True,
                ) as connection:
                    connection.execute("CREATE DATABASE envyard")
                break
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"postgres does not accept connections on 127.0.0.1:{port} after 30 s ({error}):\n"
                        f"{_log_tail(log_path)}"
                    ) from error
                time.sleep(0.05)
        yield f"postgresql+psycopg://{_POSTGRES_USER}@127.0.0.1:{port}/envyard"
    finally:
        if process is not None:
            stop_postgres(process)
        if created_base is not None:
            shutil.rmtree(created_base, ignore_errors=True)
