"""Run a command in an unpacked image root filesystem with ``runc`` or ``bwrap``.

Both get the same :class:`Sandbox` description: the root filesystem (mounted read-only), the working directory
(a host directory bound read-write at the manifest's ``workdir``), data directories bound read-only at their mount
paths, argv, environment and user. ``runc`` gets a bundle whose ``config.json`` starts from ``runc spec``
(``--rootless`` when not run as root) and is edited; ``bwrap`` gets its command line. Networking is off in both
(a new network namespace).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

from envyard.builder.errors import RunFailedError

__all__ = ["ContainerRuntime", "Sandbox", "bwrap_argv", "run_in_sandbox", "runc_config"]

ContainerRuntime = Literal["runc", "bwrap"]


@dataclass(frozen=True, slots=True)
class Sandbox:
    """What a contained command sees."""

    rootfs: Path
    argv: Sequence[str]
    cwd: str
    binds: Sequence[tuple[Path, str, bool]] = ()  # (host path, container path, writable)
    env: Mapping[str, str] = field(default_factory=dict)
    uid: int = 0
    gid: int = 0


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RunFailedError(f"{name} is not installed", hint=f"install {name} (apt-get install {name}) or choose "
                             "another --runtime")
    return found


def _mount_points(sandbox: Sandbox) -> None:
    for _, target, _ in sandbox.binds:
        (sandbox.rootfs / PurePosixPath(target).relative_to("/")).mkdir(parents=True, exist_ok=True)
    (sandbox.rootfs / PurePosixPath(sandbox.cwd).relative_to("/")).mkdir(parents=True, exist_ok=True)
    for name in ("proc", "dev", "tmp", "sys"):
        (sandbox.rootfs / name).mkdir(exist_ok=True)


def runc_config(sandbox: Sandbox, bundle: Path) -> dict[str, Any]:
    """``runc spec``'s default config.json for ``bundle``, set to run ``sandbox``."""
    spec = [_tool("runc"), "spec", "--bundle", os.fspath(bundle)]
    if os.geteuid() != 0:
        spec.append("--rootless")
    (bundle / "config.json").unlink(missing_ok=True)
    subprocess.run(spec, check=True, capture_output=True)
    config: dict[str, Any] = json.loads((bundle / "config.json").read_text())
    config["root"] = {"path": os.fspath(sandbox.rootfs), "readonly": True}
    process = config["process"]
    process.update(terminal=False, args=list(sandbox.argv), cwd=sandbox.cwd,
                   env=[f"{key}={value}" for key, value in sandbox.env.items()])
    if os.geteuid() == 0:
        process["user"] = {"uid": sandbox.uid, "gid": sandbox.gid}
    config["mounts"] = [*config["mounts"], {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                                            "options": ["nosuid", "nodev", "mode=1777"]}]
    for source, target, writable in sandbox.binds:
        config["mounts"].append({"destination": target, "type": "bind", "source": os.fspath(source),
                                 "options": ["rbind", "rw" if writable else "ro"]})
    return config


def bwrap_argv(sandbox: Sandbox) -> list[str]:
    """The ``bwrap`` command line that runs ``sandbox``."""
    argv = [_tool("bwrap"), "--ro-bind", os.fspath(sandbox.rootfs), "/", "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
    for source, target, writable in sandbox.binds:
        argv += ["--bind" if writable else "--ro-bind", os.fspath(source), target]
    for key, value in sandbox.env.items():
        argv += ["--setenv", key, value]
    return [*argv, "--chdir", sandbox.cwd, "--", *sandbox.argv]


def run_in_sandbox(runtime: ContainerRuntime, sandbox: Sandbox, bundle: Path,
                   stdout: IO[Any] | int | None = None, stderr: IO[Any] | int | None = None) -> int:
    """Run ``sandbox`` with ``runtime``; its exit status (the container is removed afterwards)."""
    _mount_points(sandbox)
    if runtime == "bwrap":
        return subprocess.run(bwrap_argv(sandbox), stdout=stdout, stderr=stderr, check=False).returncode
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(runc_config(sandbox, bundle), indent=1))
    container = f"envyard-run-{os.getpid()}-{secrets.token_hex(4)}"
    runc = _tool("runc")
    try:
        return subprocess.run([runc, "run", "--bundle", os.fspath(bundle), container], stdout=stdout, stderr=stderr,
                              stdin=subprocess.DEVNULL, check=False).returncode
    finally:
        subprocess.run([runc, "delete", "--force", container], capture_output=True, check=False)
