"""Isolation of a build's process from everything of the worker that is not the build's.

A build runs code its submitter controls: package post-link scripts are never run, but pip source
distributions (when a namespace allows them) run their build backend, and every archive is untrusted. So the
child process (``python -m envyard.worker.job``) gets:

* an environment built from an allow-list (:func:`child_environment`): locale, time zone, PATH, PYTHONPATH,
  TLS certificate and proxy variables, and the builder settings that are not secrets. Tokens, the secret key,
  database URLs, store and AWS credentials are never passed; ``HOME`` and ``TMPDIR`` are the build's directory;
* no inherited file descriptor but its event pipe (``close_fds``);
* one of three sandboxes (:class:`Sandbox`, setting ``build_sandbox``):

  ``bwrap``  a bubblewrap sandbox (new PID, IPC, UTS namespaces, no capabilities, killed with the worker) whose
             file system holds only the system directories (/usr, a few files of /etc, /proc, /dev, an empty
             /tmp), the Python installation and envyard's sources (read-only), the caches (repodata, packages,
             pip) and the build's own directory. The data directory (admin token, secret key, database,
             artifacts) does not exist inside; paths the operator names private are masked even when they lie
             under a bound directory.
  ``uid``    without bubblewrap, a worker running as root runs the build as another user (``build_uid``): the
             build's directory and caches are given to that user, the data directory is made private to root.
  ``none``   no isolation beyond the environment and descriptors (a development machine).

The network is shared in every mode: builds fetch their channels and package indexes (which addresses they may
reach is decided by the channel and index checks, not here).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from envyard.builder.errors import ConfigError
from envyard.builder.settings import Settings
from envyard.worker.settings import WorkerSettings

__all__ = ["CHILD_SETTINGS", "Sandbox", "SandboxMode", "child_environment", "make_sandbox", "sandbox_for"]

log = logging.getLogger(__name__)

SandboxMode = Literal["bwrap", "uid", "none"]

#: Builder settings a build needs, passed as ENVYARD_* variables (never credentials: docker_config stays out).
CHILD_SETTINGS = ("cache_dir", "channel_alias", "mirrors", "s3_endpoint_url", "s3_region", "s3_addressing_style",
                  "pip_index_url", "max_concurrent_requests", "shared_package_caches", "env_prefix",
                  "allowed_url_prefixes", "allowed_file_roots", "allow_public_https")
#: Variables of the worker's environment a build inherits (plus LC_*).
ENV_KEPT = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
})
#: What a build may see of /etc: name resolution, TLS roots, time zone, the dynamic linker, user names.
ETC_KEPT = ("resolv.conf", "hosts", "nsswitch.conf", "host.conf", "gai.conf", "ssl", "ca-certificates",
            "ca-certificates.conf", "pki", "localtime", "timezone", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
            "passwd", "group", "mime.types", "os-release")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def child_environment(settings: Settings, environ: Mapping[str, str], job_dir: Path,
                      extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The build's environment: allow-listed variables of ``environ``, the builder settings it needs as
    ENVYARD_* variables, HOME and TMPDIR in ``job_dir``, then ``extra`` (set by the worker's own code)."""
    import json

    env = {k: v for k, v in environ.items() if k in ENV_KEPT or k.startswith("LC_")}
    for name in CHILD_SETTINGS:
        value = getattr(settings, name)
        if value is None:
            continue
        text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
        env[f"ENVYARD_{name.upper()}"] = text
    env.update({"HOME": str(job_dir), "TMPDIR": str(job_dir / "tmp"), **(extra or {})})
    return env


def _local_path(url: str | None) -> Path | None:
    if not url or not url.startswith("file:"):
        return None
    return Path(unquote(urlsplit(url).path))


def _python_paths(environ: Mapping[str, str]) -> list[Path]:
    """The Python installation, its site-packages, envyard's sources and PYTHONPATH: what the child imports."""
    import site

    import envyard.builder
    import envyard.worker

    paths = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.executable).resolve().parent,
             Path(envyard.builder.__file__).resolve().parents[1], Path(envyard.worker.__file__).resolve().parents[1]]
    paths += [Path(p) for p in site.getsitepackages()]
    paths += [Path(p) for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return paths


def _certificate_paths(environ: Mapping[str, str]) -> list[Path]:
    return [Path(environ[k]) for k in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                                       "PIP_CERT") if environ.get(k)]


def _within(path: Path, parent: Path) -> bool:
    return path == parent or path.is_relative_to(parent)


@dataclass(frozen=True)
class Sandbox:
    """How a build's process is started: ``mode`` and, for bwrap, what its file system holds."""

    mode: SandboxMode
    read_only: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    private: tuple[Path, ...] = ()  # never visible to a build, even under a bound directory
    uid: int = 65534
    bwrap: str = "bwrap"
    notes: tuple[str, ...] = field(default=(), compare=False)

    def describe(self) -> str:
        if self.mode == "bwrap":
            return f"bwrap sandbox ({self.bwrap}): the build sees its directory, the caches and Python only"
        if self.mode == "uid":
            return f"builds run as uid {self.uid} (no bwrap)"
        return "no sandbox: builds run as the worker's user and can read its files"

    def prepare(self, job_dir: Path) -> None:
        """Make ``job_dir`` (and, once, the caches) the build user's in uid mode."""
        if self.mode == "uid":
            _chown_tree(job_dir, self.uid)

    def command(self, argv: Sequence[str], job_dir: Path) -> list[str]:
        """``argv`` as run in the sandbox, in ``job_dir``."""
        if self.mode != "bwrap":
            return list(argv)
        args = [self.bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--cap-drop", "ALL", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for directory in SYSTEM_DIRS:
            if os.path.islink(directory):
                args += ["--symlink", os.readlink(directory), directory]
            elif os.path.isdir(directory):
                args += ["--ro-bind", directory, directory]
        for name in ETC_KEPT:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        binds: dict[Path, str] = {}
        for path in self.read_only:
            binds.setdefault(path, "--ro-bind")
        for path in (*self.writable, job_dir):
            binds[path] = "--bind"
        bound = []
        for path, how in sorted(binds.items(), key=lambda item: len(item[0].parts)):  # parents first
            if path == Path("/") or not path.exists():
                continue
            args += [how, str(path), str(path)]
            bound.append(path)
        for path in self.private:  # masked after the binds that would show it
            if path.exists() and any(_within(path, b) for b in bound):
                args += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
        return [*args, "--chdir", str(job_dir), "--", *argv]

    def popen_options(self) -> dict[str, Any]:
        """Extra :class:`subprocess.Popen` arguments (uid mode: the build's user and group)."""
        if self.mode == "uid":
            return {"user": self.uid, "group": self.uid, "extra_groups": []}
        return {}


def _chown_tree(root: Path, uid: int) -> None:
    os.chown(root, uid, uid, follow_symlinks=False)
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.chown(os.path.join(directory, name), uid, uid, follow_symlinks=False)


def _bwrap_problem(bwrap: str | None) -> str | None:
    """Why bubblewrap cannot be used here, or None when a trial sandbox ran."""
    if bwrap is None:
        return "bwrap is not installed (Debian: apt-get install bubblewrap)"
    probe = Sandbox("bwrap", bwrap=bwrap).command(["true"], Path("/"))
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap did not run: {exc}"
    return None if done.returncode == 0 else f"bwrap failed: {done.stderr.strip()[-300:]}"


def make_sandbox(mode: SandboxMode | None, *, read_only: Iterable[Path] = (), writable: Iterable[Path] = (),
                 private: Iterable[Path] = (), uid: int = 65534) -> Sandbox:
    """The sandbox for ``mode``, or the strongest that works here when None (bwrap, else uid as root, else none).
    ConfigError when the mode asked for cannot work here."""
    read_only = tuple(dict.fromkeys(p.absolute() for p in read_only))
    writable = tuple(dict.fromkeys(p.absolute() for p in writable))
    private = tuple(dict.fromkeys(p.absolute() for p in private))
    notes = []
    if mode in (None, "bwrap"):
        bwrap = shutil.which("bwrap")
        problem = _bwrap_problem(bwrap)
        if problem is None and bwrap is not None:
            return Sandbox("bwrap", read_only, writable, private, uid, bwrap)
        if mode == "bwrap":
            raise ConfigError(f"the build sandbox 'bwrap' cannot be used: {problem}",
                              hint="install bubblewrap, allow unprivileged user namespaces, or choose another "
                              "ENVYARD_BUILD_SANDBOX (uid, none)")
        notes.append(problem or "")
    if mode in (None, "uid"):
        if os.geteuid() == 0:
            return Sandbox("uid", read_only, writable, private, uid, notes=tuple(notes))
        if mode == "uid":
            raise ConfigError("the build sandbox 'uid' needs a worker running as root",
                              hint="run the worker as root, or choose ENVYARD_BUILD_SANDBOX=bwrap")
    return Sandbox("none", read_only, writable, private, uid, notes=tuple(notes))


def sandbox_for(settings: Settings | WorkerSettings, environ: Mapping[str, str]) -> Sandbox:
    """The sandbox the settings ask for: caches writable; Python, envyard's sources, the settings' local
    channels and indexes and ``build_read_only_paths`` readable; the data directory private. Plain builder
    :class:`Settings` (no worker fields) get the strongest sandbox that works and no private paths."""
    if not isinstance(settings, WorkerSettings):
        settings = WorkerSettings.model_construct(**{name: getattr(settings, name) for name in Settings.model_fields},
                                                   data_dir=Path(".envyard-no-data-dir"))
    local = [_local_path(settings.channel_alias), _local_path(settings.pip_index_url)]
    local += [_local_path(url) for urls in settings.mirrors.values() for url in urls]
    local += [_local_path(prefix) for prefix in settings.allowed_url_prefixes]
    local += list(settings.allowed_file_roots)  # admin-allowed file:// channels are readable, nothing else local
    read_only = [*_python_paths(environ), *_certificate_paths(environ), *settings.shared_package_caches,
                 *settings.build_read_only_paths, *(p for p in local if p is not None)]
    writable = [settings.repodata_cache_dir, settings.package_cache_dir, settings.pip_cache_dir]
    for directory in writable:
        directory.mkdir(parents=True, exist_ok=True)
    private = [settings.data_dir, settings.admin_token_file, settings.secret_key_file, settings.docker_config]
    database = settings.resolved_database_url
    if database.startswith("sqlite:///"):
        private += [Path(database[len("sqlite:///"):] + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    storage = _local_path(settings.resolved_storage_url)
    if storage is not None:
        private.append(storage)
    sandbox = make_sandbox(settings.build_sandbox, read_only=read_only, writable=writable, private=private,
                           uid=settings.build_uid)
    if sandbox.mode == "uid":
        for directory in writable:
            _chown_tree(directory, sandbox.uid)
        data_dir = settings.data_dir.absolute()  # the build's user must not read the server's files
        if data_dir.is_dir() and data_dir.stat().st_uid == os.geteuid():
            data_dir.chmod(data_dir.stat().st_mode & 0o700)
    for note in sandbox.notes:
        if note:
            log.warning("build sandbox: %s", note)
    log.info("build sandbox: %s", sandbox.describe())
    return sandbox
