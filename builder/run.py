"""Run a run manifest: verify every input, materialize the environment and the data, run, hash the outputs.

The order is fixed and nothing of the command runs before the last check passed:

1. the environment's digest: the lock bytes' sha256 (``prefix`` runtime) or the image manifest's digest in the OCI
   layout (``runc``/``bwrap``);
2. every data snapshot: fetched at its pinned commit through DVC, every file re-hashed with dvc-data;
3. the environment itself: the prefix installed from the (verified) lock through the shared package cache (each
   package checked against the lock's sha256), or the image's layers unpacked (each blob checked against its digest);
4. the command; then the declared outputs are hashed and a new manifest is returned whose ``parent`` is the input's
   digest.

``repin_lock`` is for DVC pipelines, where the lockfile is a stage dependency and a relock must re-run the stage:
the given lock's bytes become the environment (the image digests, built from the old lock, are dropped) and the
result manifest records the new lock's sha256, its ``parent`` still the manifest given.

Where data appears: in the container runtimes each snapshot is bound read-only at its mount path, and the host
working directory at the manifest's ``workdir``. The ``prefix`` runtime has no mount namespace: a mount path must lie
under the manifest's ``workdir`` and the data is placed at the same relative path under the host working directory
(``/work/data`` with ``workdir: /work`` becomes ``<host workdir>/data``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

from envyard.builder.data import fetch_data, verify_data
from envyard.builder.errors import ManifestError, RunFailedError, RunIntegrityError
from envyard.builder.install import InstallOptions, host_platform, install_lock
from envyard.builder.run_manifest import OutputFile, RunManifest

__all__ = [
    "RunOptions",
    "RunResult",
    "Runtime",
    "hash_outputs",
    "lock_sha256",
    "run_manifest",
    "verify_image_digest",
    "verify_lock_bytes",
]

logger = logging.getLogger(__name__)

Runtime = Literal["prefix", "runc", "bwrap"]
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How to run a manifest on this machine."""

    workdir: Path  # the host directory the command works in; outputs are relative to it
    runtime: Runtime = "prefix"
    lock_path: Path | None = None  # prefix runtime: the lockfile whose sha256 the manifest pins
    image_layout: Path | None = None  # container runtimes: an OCI layout holding the manifest's image
    platform: str | None = None  # default: this machine's
    install: InstallOptions | None = None  # prefix runtime: cache layers (required)
    state_dir: Path | None = None  # environment, root filesystem and data; default: a temporary directory
    outputs: Sequence[str] = ()
    remote_config: Mapping[str, str] | None = None  # DVC remote credentials/endpoint, never recorded
    env: Mapping[str, str] = field(default_factory=dict)  # extra variables at run time (secrets), never recorded
    repin_lock: bool = False  # DVC pipelines: take lock_path's bytes as the environment (recorded in the result)
    stdout: IO[Any] | int | None = None
    stderr: IO[Any] | int | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    """The result manifest (outputs, parent) and what was verified before the command started."""

    manifest: RunManifest
    verified: list[str]
    returncode: int


def lock_sha256(data: bytes) -> str:
    """The hex sha256 a manifest pins for lockfile bytes ``data``.

    >>> lock_sha256(b"")
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    """
    return hashlib.sha256(data).hexdigest()


def verify_lock_bytes(manifest: RunManifest, data: bytes, source: str | os.PathLike[str]) -> None:
    """RunIntegrityError unless ``data`` hashes to the manifest's lock sha256."""
    actual = lock_sha256(data)
    expected = manifest.environment.lock.sha256
    if actual != expected:
        raise RunIntegrityError(f"the lock's sha256 is {actual}, the manifest pins {expected}", file=source,
                                field="environment.lock.sha256",
                                details={"expected": expected, "actual": actual},
                                hint="the lockfile changed since the manifest was made (a relock?); run with the "
                                "original lock, or make a new manifest for the new lock")


def verify_image_digest(manifest: RunManifest, actual: str, platform: str, source: str | os.PathLike[str]) -> None:
    """RunIntegrityError unless ``actual`` is the image digest the manifest pins for ``platform``."""
    expected = manifest.environment.images.get(platform)
    if expected is None:
        pinned = ", ".join(sorted(manifest.environment.images)) or "none"
        raise ManifestError(f"the manifest pins no image for {platform} (it pins: {pinned})",
                            field=f"environment.images.{platform}",
                            hint="run with --runtime prefix, or make the manifest with the image's digest")
    if actual != expected:
        raise RunIntegrityError(f"the image for {platform} is {actual}, the manifest pins {expected}", file=source,
                                field=f"environment.images.{platform}",
                                details={"expected": expected, "actual": actual},
                                hint="the image was rebuilt or replaced; use the image the manifest names")


def _host_mount(manifest: RunManifest, mount: str, workdir: Path, index: int) -> Path:
    relative = PurePosixPath(mount).relative_to("/")
    base = PurePosixPath(manifest.workdir).relative_to("/")
    if relative == base or base not in relative.parents:
        raise ManifestError(
            f"mount path {mount} is not under the workdir {manifest.workdir}; the prefix runtime cannot place it",
            field=f"data[{index}].mount",
            hint="choose a mount path under the workdir, or run in a container (--runtime runc or bwrap)")
    return workdir / relative.relative_to(base)


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def hash_outputs(workdir: Path, outputs: Sequence[str]) -> list[OutputFile]:
    """sha256 and size of every declared output (a directory: each regular file in it), sorted by path."""
    found: dict[str, OutputFile] = {}
    for declared in outputs:
        relative = PurePosixPath(declared)
        if relative.is_absolute() or ".." in relative.parts:
            raise ManifestError(f"output {declared!r} must be a path relative to the working directory",
                                field="outputs", hint="declare outputs as relative paths, e.g. out/model.bin")
        path = workdir / relative
        if path.is_file():
            files = [path]
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        else:
            raise RunFailedError(f"the declared output {declared} was not written", file=path,
                                 hint="check the command, or declare the outputs it writes")
        for file in files:
            sha256, size = _hash_file(file)
            name = file.relative_to(workdir).as_posix()
            found[name] = OutputFile(path=name, sha256=sha256, size=size)
    return [found[name] for name in sorted(found)]


def run_manifest(manifest: RunManifest, options: RunOptions) -> RunResult:
    """Verify, materialize and run ``manifest``; the result manifest carries the outputs and ``parent``."""
    workdir = options.workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    given = manifest
    if options.repin_lock and options.lock_path is not None:
        from envyard.builder.run_manifest import lock_ref

        lock = lock_ref(options.lock_path).model_copy(update={"filename": manifest.environment.lock.filename})
        manifest = manifest.model_copy(update={"environment": manifest.environment.model_copy(
            update={"lock": lock, "images": {}, "image_refs": []})})
    platform = options.platform or host_platform()
    with tempfile.TemporaryDirectory(prefix="envyard-run-") as tmp:
        state = options.state_dir.absolute() if options.state_dir is not None else Path(tmp)
        state.mkdir(parents=True, exist_ok=True)
        if options.runtime == "prefix":
            verified, returncode = _run_prefix(manifest, options, workdir, platform, state)
        else:
            verified, returncode = _run_container(manifest, options, workdir, platform, state)
    if returncode != 0:
        raise RunFailedError(f"the command exited with status {returncode}", field="command",
                             details={"returncode": returncode}, hint="see its output above")
    result = manifest.model_copy(update={"outputs": hash_outputs(workdir, options.outputs), "parent": given.digest})
    return RunResult(result, verified, returncode)


def _fetch_all(manifest: RunManifest, options: RunOptions, targets: Sequence[Path]) -> list[str]:
    verified = []
    for index, (mount, target) in enumerate(zip(manifest.data, targets, strict=True)):
        fetch_data(mount.snapshot, target, options.remote_config)
        verify_data(mount.snapshot, target, options.remote_config)
        verified += [f"data[{index}].{entry.path}" for entry in mount.snapshot.paths]
    return verified


def _run_prefix(manifest: RunManifest, options: RunOptions, workdir: Path, platform: str,
                state: Path) -> tuple[list[str], int]:
    from envyard.builder.lockfiles import parse_lockfile

    if options.lock_path is None or options.install is None:
        raise ManifestError("the prefix runtime needs the lockfile and the package cache", field="lock",
                            hint="pass --lock FILE (the lock the manifest pins)")
    data = options.lock_path.read_bytes()  # hashed and parsed from the same bytes
    verify_lock_bytes(manifest, data, options.lock_path)
    verified = ["environment.lock.sha256"]
    targets = [_host_mount(manifest, mount.mount, workdir, i) for i, mount in enumerate(manifest.data)]
    verified += _fetch_all(manifest, options, targets)
    lock = parse_lockfile(data.decode("utf-8"), source=options.lock_path)
    if platform not in lock.platforms:
        raise ManifestError(f"the lock has no {platform} (it has {', '.join(lock.platform_names)})",
                            file=options.lock_path, hint="run on a machine of one of the lock's platforms")
    prefix = state / "env"
    install_lock(lock.platforms[platform], prefix, options.install)
    verified.append("environment.packages")
    env = {"PATH": f"{prefix}/bin:{BASE_PATH}", "CONDA_PREFIX": os.fspath(prefix), "HOME": os.fspath(workdir),
           "LANG": "C.UTF-8", "ENVYARD_WORKDIR": os.fspath(workdir), **manifest.env, **options.env}
    logger.info("running %s in %s (prefix %s)", manifest.command, workdir, prefix)
    try:
        completed = subprocess.run(list(manifest.command), cwd=workdir, env=env, stdout=options.stdout,
                                   stderr=options.stderr, stdin=subprocess.DEVNULL, check=False)
    except OSError as exc:
        raise RunFailedError(f"cannot start {manifest.command[0]}: {exc.strerror}", field="command",
                             hint="the command must be in the environment (its bin/) or the host's PATH") from None
    return verified, completed.returncode


def _run_container(manifest: RunManifest, options: RunOptions, workdir: Path, platform: str,
                   state: Path) -> tuple[list[str], int]:
    from envyard.builder.oci.unpack import find_platform_manifest, unpack_rootfs
    from envyard.builder.sandbox import Sandbox, run_in_sandbox

    if options.image_layout is None:
        raise ManifestError(f"the {options.runtime} runtime needs the image", field="image",
                            hint="pass --image-layout DIR (an OCI layout holding the manifest's image)")
    image = find_platform_manifest(options.image_layout, platform)
    verify_image_digest(manifest, image.digest, platform, options.image_layout)
    verified = [f"environment.images.{platform}"]
    targets = [state / "data" / str(index) for index in range(len(manifest.data))]
    verified += _fetch_all(manifest, options, targets)
    rootfs = state / "rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    unpack_rootfs(image, rootfs)
    verified.append("environment.layers")
    runtime = image.config.get("config") or {}
    image_env = dict(item.split("=", 1) for item in runtime.get("Env") or [] if "=" in item)
    uid, _, gid = str(runtime.get("User") or "0:0").partition(":")
    binds = [(workdir, manifest.workdir, True)]
    binds += [(target, mount.mount, False) for target, mount in zip(targets, manifest.data, strict=True)]
    sandbox = Sandbox(rootfs=rootfs, argv=[*(runtime.get("Entrypoint") or []), *manifest.command],
                      cwd=manifest.workdir, binds=binds,
                      env={**image_env, "HOME": manifest.workdir, **manifest.env, **options.env},
                      uid=int(uid or 0), gid=int(gid or uid or 0))
    logger.info("running %s with %s on %s", manifest.command, options.runtime, image.digest)
    runtime_name: Literal["runc", "bwrap"] = "runc" if options.runtime == "runc" else "bwrap"
    return verified, run_in_sandbox(runtime_name, sandbox, state / "bundle", options.stdout, options.stderr)
