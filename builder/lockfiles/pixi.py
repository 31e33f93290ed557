"""``pixi.lock`` (rattler-lock, format version 7 on write; 4-7 and conda-lock v1 on read) via py-rattler.

Writing goes through :class:`rattler.LockFile` into the environment ``default``.
Limitations of py-rattler 0.28's builder API, and how they are handled:

* ``add_pypi_package`` takes only name, version and location: it cannot record a
  hash, ``requires_dist`` or ``requires_python``. The sha256 is therefore carried in
  the location as a PEP 503 ``#sha256=HEX`` fragment (pip and uv verify it; our
  reader takes it back out); ``requires_dist``/``requires_python`` are lost.
* Timestamps come only from the packages' own ``timestamp`` fields (never from the
  clock or a file), so writing the same lock twice gives the same bytes.

Reading keeps every conda binary package and every PyPI package of one environment.
Conda *source* packages (pixi-build, built from a path or git checkout) have no URL
or hash to install from: they are an error unless ``skip_source=True``.
"""

from __future__ import annotations

import datetime
import re
from os import PathLike
from pathlib import Path

from rattler import (
    LockChannel,
    LockFile,
    LockPlatform,
    RepoDataRecord,
)
from rattler.lock import CondaLockedBinaryPackage, CondaLockedSourcePackage, PypiLockedPackage

from builder.errors import LockfileError
from builder.lockfiles._common import split_sha256_fragment
from builder.model import EnvironmentLock, LockedCondaPackage, LockedPipPackage, PlatformLock
from builder.records import to_repodata_record

DEFAULT_ENVIRONMENT = "default"
_LINE = re.compile(r"line (\d+)")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _rattler_error(exc: Exception, path: str | PathLike[str], hint: str) -> LockfileError:
    message = " ".join(str(exc).split()) or type(exc).__name__
    match = _LINE.search(message)
    return LockfileError(message, file=path, line=int(match.group(1)) if match else None, hint=hint)


# --- writing ------------------------------------------------------------------------------


def _pip_location(pkg: LockedPipPackage) -> str:
    url, fragment_sha = split_sha256_fragment(pkg.url)
    sha256 = pkg.sha256 or fragment_sha
    return f"{url}#sha256={sha256}" if sha256 else url


def build_pixi_lock(lock: EnvironmentLock, environment: str = DEFAULT_ENVIRONMENT) -> LockFile:
    """The lock as a :class:`rattler.LockFile` with one environment."""
    names = lock.platform_names
    platforms = {p: LockPlatform(p, virtual_packages=list(lock.platforms[p].virtual_packages)) for p in names}
    lock_file = LockFile([platforms[p] for p in names])
    lock_file.set_channels(environment, [LockChannel(c) for c in lock.channels])
    for name in names:
        plock = lock.platforms[name]
        for pkg in sorted(plock.conda, key=lambda p: p.name):
            if not pkg.name.startswith("__"):
                lock_file.add_conda_package(environment, platforms[name], to_repodata_record(pkg))
        for pip in sorted(plock.pip, key=lambda p: p.normalized_name):
            try:
                lock_file.add_pypi_package(environment, platforms[name], pip.name, pip.version, _pip_location(pip))
            except Exception as exc:  # rattler validates name and version (PEP 440)
                raise LockfileError(
                    f"pip package {pip.name} {pip.version!r} ({name}) cannot be written to pixi.lock: {exc}",
                    field=f"{name}/{pip.name}",
                    hint="pixi.lock needs a fixed PEP 440 version for every PyPI package",
                ) from None
    return lock_file


def write_pixi_lock(lock: EnvironmentLock, path: str | PathLike[str]) -> None:
    """Write the lock as ``pixi.lock`` (environment ``default``) to ``path``."""
    try:
        build_pixi_lock(lock).to_path(Path(path))
    except LockfileError as exc:
        exc.file = str(path)
        raise
    except Exception as exc:  # rattler raises its own exception types for invalid records
        raise _rattler_error(exc, path, "the lock holds a record rattler cannot write") from None


# --- reading ------------------------------------------------------------------------------


def _noarch(record: RepoDataRecord) -> str | None:
    noarch = record.noarch
    return "python" if noarch.python else "generic" if noarch.generic else None


def _conda_package(record: RepoDataRecord) -> LockedCondaPackage:
    timestamp = record.timestamp
    channel = record.channel or record.url.rsplit("/", 2)[0]
    # Legacy (conda-lock shaped) files make rattler report the target platform as the subdir of
    # noarch packages; the URL knows better.
    subdir = "noarch" if record.url.rsplit("/", 2)[-2:-1] == ["noarch"] else record.subdir
    return LockedCondaPackage(
        name=record.name.source,
        version=str(record.version),
        build=str(record.build),
        build_number=record.build_number,
        subdir=subdir,
        channel=channel.rstrip("/"),
        url=record.url,
        sha256=record.sha256.hex() if record.sha256 else None,
        md5=record.md5.hex() if record.md5 else None,
        depends=tuple(record.depends),
        constrains=tuple(record.constrains),
        size=record.size,
        timestamp=round((timestamp - _EPOCH).total_seconds() * 1000) if timestamp else None,
        noarch=_noarch(record),
        license=record.license,
        track_features=tuple(record.track_features),
    )


def _pip_package(pkg: PypiLockedPackage) -> LockedPipPackage:
    url, fragment_sha = split_sha256_fragment(pkg.location)
    try:
        hashes = pkg.hashes
        digest = hashes.sha256 if hashes is not None else None
    except AttributeError:  # py-rattler 0.28 wraps a missing hash object, then fails on access
        digest = None
    return LockedPipPackage(
        name=pkg.name,
        version=pkg.version,
        url=url,
        sha256=digest.hex() if digest else fragment_sha,
        requires_dist=tuple(pkg.requires_dist),
        requires_python=pkg.requires_python,
    )


def parse_pixi_lock(
    path: str | PathLike[str], *, environment: str | None = None, skip_source: bool = False
) -> EnvironmentLock:
    """Read one environment (``default`` unless named) of a ``pixi.lock``."""
    path = Path(path)
    env_name = environment or DEFAULT_ENVIRONMENT
    try:
        lock_file = LockFile.from_path(path.resolve())
        env = lock_file.environment(env_name)
    except Exception as exc:  # rattler's ParseCondaLockError and friends
        raise _rattler_error(exc, path, "not a pixi.lock this version of envyard (py-rattler 0.28) can read") from None
    if env is None:
        known = ", ".join(sorted(name for name, _ in lock_file.environments())) or "none"
        raise LockfileError(
            f"no environment {env_name!r} in the lock file",
            file=path,
            field="environments",
            hint=f"environments in this file: {known}",
        )
    virtual = {p.name: tuple(p.virtual_packages) for p in lock_file.platforms()}
    platforms: dict[str, PlatformLock] = {}
    try:
        for platform in env.platforms():
            conda: list[LockedCondaPackage] = []
            pip: list[LockedPipPackage] = []
            for pkg in env.packages(platform) or []:
                if isinstance(pkg, CondaLockedBinaryPackage):
                    conda.append(_conda_package(pkg.repo_data_record()))
                elif isinstance(pkg, PypiLockedPackage):
                    pip.append(_pip_package(pkg))
                elif isinstance(pkg, CondaLockedSourcePackage) and not skip_source:
                    raise LockfileError(
                        f"{pkg.name} ({platform.name}) is a conda source package ({pkg.location})",
                        file=path,
                        field=f"environments.{env_name}.packages.{platform.name}",
                        hint="source packages are built by `pixi build`; envyard installs only binary packages",
                    )
            conda.sort(key=lambda p: p.name)
            pip.sort(key=lambda p: p.normalized_name)
            platforms[platform.name] = PlatformLock(
                platform.name, conda=tuple(conda), pip=tuple(pip), virtual_packages=virtual.get(platform.name, ())
            )
    except LockfileError:
        raise
    except Exception as exc:
        raise _rattler_error(exc, path, "a package record in the lock file is not valid") from None
    return EnvironmentLock(
        platforms=dict(sorted(platforms.items())),
        name=environment,
        channels=tuple(str(c) for c in env.channels()),
    )
