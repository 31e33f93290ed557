"""``pixi.lock`` (rattler-lock, format version 7 on write; 4-7 and conda-lock v1 on read) via py-rattler.

Writing goes through :class:`rattler.LockFile`, into the environment ``default`` and any
others passed. py-rattler 0.28's ``add_pypi_package`` takes only name, version and
location, so the PyPI entries' ``sha256``, ``requires_dist`` and ``requires_python`` are
added to the text rattler wrote (where rattler itself puts them), and the result is read
back by rattler before it is accepted. What pixi.lock has no place for (categories,
custom metadata) is reported through ``warn``. Timestamps come only from the packages'
own ``timestamp`` fields (never from the clock or a file), so writing the same lock
twice gives the same bytes.

Reading keeps every conda binary package and every PyPI package of one environment (or
of each, :func:`parse_pixi_environments`). Conda *source* packages (pixi-build, built
from a path or git checkout) and PyPI packages from a local path (editable, often of
``<dynamic>`` version) have no artifact to lock: each is skipped with one warning naming
it.
"""

from __future__ import annotations

import datetime
import re
import tempfile
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import yaml
from rattler import (
    LockChannel,
    LockFile,
    LockPlatform,
    RepoDataRecord,
)
from rattler.lock import CondaLockedBinaryPackage, CondaLockedSourcePackage, PypiLockedPackage

from envyard.builder.errors import LockfileError
from envyard.builder.lockfiles._common import Warn, describe_categories, no_warnings, split_sha256_fragment
from envyard.builder.lockfiles._yaml import YAML_LOADER
from envyard.builder.lockfiles._yaml import yaml_scalar as q
from envyard.builder.model import EnvironmentLock, LockedCondaPackage, LockedPipPackage, PlatformLock
from envyard.builder.records import to_repodata_record

DEFAULT_ENVIRONMENT = "default"
PIXI_LOCK_NAME = "pixi.lock"
_LINE = re.compile(r"line (\d+)")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _rattler_error(exc: Exception, path: str | PathLike[str], hint: str) -> LockfileError:
    message = " ".join(str(exc).split()) or type(exc).__name__
    match = _LINE.search(message)
    return LockfileError(message, file=path, line=int(match.group(1)) if match else None, hint=hint)


# --- writing ------------------------------------------------------------------------------


def _pip_location(pkg: LockedPipPackage) -> str:
    return split_sha256_fragment(pkg.url)[0]


def _pip_sha256(pkg: LockedPipPackage) -> str | None:
    return pkg.sha256 or split_sha256_fragment(pkg.url)[1]


def build_pixi_lock(environments: Mapping[str, EnvironmentLock]) -> LockFile:
    """The locks as one :class:`rattler.LockFile`, one environment each."""
    virtual: dict[str, list[str]] = {}
    for lock in environments.values():
        for name, plock in lock.platforms.items():
            virtual.setdefault(name, list(plock.virtual_packages))
    platforms = {p: LockPlatform(p, virtual_packages=virtual[p]) for p in sorted(virtual)}
    lock_file = LockFile(list(platforms.values()))
    for environment, lock in environments.items():
        lock_file.set_channels(environment, [LockChannel(c) for c in lock.channels])
        for name in lock.platform_names:
            plock = lock.platforms[name]
            for pkg in sorted(plock.conda, key=lambda p: p.name):
                if not pkg.name.startswith("__"):
                    lock_file.add_conda_package(environment, platforms[name], to_repodata_record(pkg))
            for pip in sorted(plock.pip, key=lambda p: p.normalized_name):
                try:
                    lock_file.add_pypi_package(environment, platforms[name], pip.name, pip.version, _pip_location(pip))
                except Exception as exc:  # rattler validates name and version (PEP 440)
                    raise LockfileError(
                        f"pip package {pip.name} {pip.version!r} ({name}) cannot be written to pixi.lock: "
                        + " ".join(str(exc).split()),
                        field=f"{name}/{pip.name}",
                        hint="pixi.lock needs a fixed PEP 440 version for every PyPI package",
                    ) from None
    return lock_file


def _pypi_fields(pkg: LockedPipPackage) -> list[str]:
    lines = []
    sha256 = _pip_sha256(pkg)
    if sha256:
        lines.append(f"  sha256: {sha256}")
    if pkg.requires_dist:
        lines.append("  requires_dist:")
        lines.extend(f"  - {q(r)}" for r in pkg.requires_dist)
    if pkg.requires_python:
        lines.append(f"  requires_python: {q(pkg.requires_python)}")
    return lines


def _add_pypi_fields(text: str, pip: Mapping[str, LockedPipPackage]) -> str:
    """Insert hash, ``requires_dist`` and ``requires_python`` after each PyPI entry's version line."""
    if not pip:
        return text
    lines = text.splitlines()
    try:
        start = lines.index("packages:")
    except ValueError:
        return text
    out = lines[: start + 1]
    pending: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("- "):  # a new package entry
            out.extend(pending)
            pending = []
            entry = yaml.load(line[2:], Loader=YAML_LOADER) if line.startswith("- pypi:") else None
            location = entry.get("pypi") if isinstance(entry, dict) else None
            if isinstance(location, str) and location in pip:
                pending = _pypi_fields(pip[location])
        elif pending and not line.startswith(("  name:", "  version:")):
            out.extend(pending)
            pending = []
        out.append(line)
    out.extend(pending)
    return "\n".join(out) + "\n"


def _lost_in_pixi(environments: Mapping[str, EnvironmentLock], warn: Warn) -> None:
    for environment, lock in environments.items():
        where = f"{PIXI_LOCK_NAME} (environment {environment})"
        packages: list[LockedCondaPackage | LockedPipPackage] = []
        for pl in lock.platforms.values():
            packages.extend(pl.conda)
            packages.extend(pl.pip)
        categories = describe_categories(packages)
        if categories:
            warn(f"{where} has no categories: {categories} are written as required packages")
        if lock.custom_metadata:
            warn(f"{where} has no custom metadata: not written: {', '.join(lock.custom_metadata)}")
        if not lock.has_dependencies:
            warn(f"{where}: the lock carries no dependency information (read from an @EXPLICIT file)")
        empty = [name for name, pl in lock.platforms.items() if not (pl.conda or pl.pip)]
        if empty:
            warn(f"{where} records no platform without packages: not written: {', '.join(sorted(empty))}")


def render_pixi_lock(
    lock: EnvironmentLock, warn: Warn = no_warnings, *, environments: Mapping[str, EnvironmentLock] | None = None
) -> str:
    """The lock as ``pixi.lock`` text: environment ``default``, or every one of ``environments`` by name."""
    environments = environments or {DEFAULT_ENVIRONMENT: lock}
    _lost_in_pixi(environments, warn)
    lock_file = build_pixi_lock(environments)
    pip: dict[str, LockedPipPackage] = {}  # one entry per location: the first platform's, whatever the order
    for env in environments.values():
        for name in env.platform_names:
            for pkg in sorted(env.platforms[name].pip, key=lambda p: p.normalized_name):
                pip.setdefault(_pip_location(pkg), pkg)
    with tempfile.TemporaryDirectory(prefix="envyard-pixi-") as tmp:
        path = Path(tmp) / PIXI_LOCK_NAME
        try:
            lock_file.to_path(path)
            written = path.read_text(encoding="utf-8")
            text = _add_pypi_fields(written, pip)
            if text != written:  # what we added to rattler's text must read back
                path.write_text(text, encoding="utf-8")
                LockFile.from_path(path)
        except Exception as exc:  # rattler raises its own exception types for invalid records
            message = " ".join(str(exc).replace(str(path), PIXI_LOCK_NAME).split())
            raise LockfileError(
                f"the lock cannot be written as pixi.lock: {message}",
                hint="the lock holds a record rattler cannot write",
            ) from None
    return text


def write_pixi_lock(
    lock: EnvironmentLock,
    path: str | PathLike[str],
    warn: Warn = no_warnings,
    *,
    environments: Mapping[str, EnvironmentLock] | None = None,
) -> None:
    """Write the lock as ``pixi.lock`` to ``path`` (see :func:`render_pixi_lock`)."""
    try:
        text = render_pixi_lock(lock, warn, environments=environments)
    except LockfileError as exc:
        exc.file = str(path)
        raise
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


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


def _is_local_pypi(pkg: PypiLockedPackage) -> bool:
    """A PyPI package built from a local path (editable or not): no artifact to lock."""
    return _URL_SCHEME.match(pkg.location) is None or pkg.location.startswith("file:") or pkg.version == "<dynamic>"


_UNREADABLE = "not a pixi.lock this version of envyard (py-rattler 0.28) can read"


def _open(path: Path, source: str | PathLike[str] | None = None) -> LockFile:
    """``path`` as rattler reads it; errors name ``source`` (default: ``path``)."""
    try:
        return LockFile.from_path(path.resolve())
    except Exception as exc:  # rattler's ParseCondaLockError and friends
        raise _rattler_error(exc, path if source is None else source, _UNREADABLE) from None


def _open_text(text: str, source: str | PathLike[str]) -> LockFile:
    """``pixi.lock`` text as rattler reads it (py-rattler reads paths only: through a private temporary file,
    removed before this returns); errors name ``source``."""
    with tempfile.TemporaryDirectory(prefix="envyard-pixi-") as tmp:
        path = Path(tmp) / PIXI_LOCK_NAME
        path.write_text(text, encoding="utf-8")
        return _open(path, source)


def _environment_names(lock_file: LockFile) -> list[str]:
    return sorted(name for name, _ in lock_file.environments())


def _read_environment(
    lock_file: LockFile, path: str | PathLike[str], env_name: str, warn: Warn, *, skip_source: bool
) -> EnvironmentLock:
    env = lock_file.environment(env_name)
    if env is None:
        raise LockfileError(
            f"no environment {env_name!r} in the lock file",
            file=path,
            field="environments",
            hint=f"environments in this file: {', '.join(_environment_names(lock_file)) or 'none'}"
            " (or --environment all)",
        )
    virtual = {p.name: tuple(p.virtual_packages) for p in lock_file.platforms()}
    platforms: dict[str, PlatformLock] = {}
    skipped: dict[tuple[str, str, str], list[str]] = {}
    try:
        for platform in env.platforms():
            conda: list[LockedCondaPackage] = []
            pip: list[LockedPipPackage] = []
            for pkg in env.packages(platform) or []:
                if isinstance(pkg, CondaLockedBinaryPackage):
                    conda.append(_conda_package(pkg.repo_data_record()))
                elif isinstance(pkg, PypiLockedPackage) and not _is_local_pypi(pkg):
                    pip.append(_pip_package(pkg))
                elif isinstance(pkg, CondaLockedSourcePackage | PypiLockedPackage):
                    kind = "conda source package" if isinstance(pkg, CondaLockedSourcePackage) else "local PyPI package"
                    if not skip_source:
                        raise LockfileError(
                            f"{pkg.name} ({platform.name}) is a {kind} ({pkg.location})",
                            file=path,
                            field=f"environments.{env_name}.packages.{platform.name}",
                            hint="it is built from source; envyard locks only packages with an artifact to install",
                        )
                    skipped.setdefault((kind, pkg.name, pkg.location), []).append(platform.name)
            if not (conda or pip):
                continue  # nothing to lock there (only source packages, or none): pixi.lock has no empty platforms
            conda.sort(key=lambda p: p.name)
            pip.sort(key=lambda p: p.normalized_name)
            platforms[platform.name] = PlatformLock(
                platform.name, conda=tuple(conda), pip=tuple(pip), virtual_packages=virtual.get(platform.name, ())
            )
    except LockfileError:
        raise
    except Exception as exc:
        raise _rattler_error(exc, path, "a package record in the lock file is not valid") from None
    for (kind, name, location), names in sorted(skipped.items()):
        warn(
            f"{path}: environment {env_name}: skipped {kind} {name} ({location}) on {', '.join(sorted(names))}: "
            "built from source, it cannot be locked as an artifact"
        )
    return EnvironmentLock(
        platforms=dict(sorted(platforms.items())),
        name=None if env_name == DEFAULT_ENVIRONMENT else env_name,
        channels=tuple(str(c) for c in env.channels()),
    )


def parse_pixi_lock(
    path: str | PathLike[str],
    *,
    environment: str | None = None,
    warn: Warn = no_warnings,
    skip_source: bool = True,
) -> EnvironmentLock:
    """Read one environment (``default`` unless named) of a ``pixi.lock``.

    Source packages and local PyPI packages are skipped with a warning each, or are an
    error with ``skip_source=False``.
    """
    path = Path(path)
    return _read_environment(_open(path), path, environment or DEFAULT_ENVIRONMENT, warn, skip_source=skip_source)


def parse_pixi_text(
    text: str,
    *,
    source: str | PathLike[str] = PIXI_LOCK_NAME,
    environment: str | None = None,
    warn: Warn = no_warnings,
    skip_source: bool = True,
) -> EnvironmentLock:
    """Like :func:`parse_pixi_lock` for the text of a ``pixi.lock``; ``source`` names it in errors and warnings."""
    return _read_environment(_open_text(text, source), source, environment or DEFAULT_ENVIRONMENT, warn,
                             skip_source=skip_source)


def parse_pixi_environments(path: str | PathLike[str], *, warn: Warn = no_warnings) -> dict[str, EnvironmentLock]:
    """Every environment of a ``pixi.lock``, ``default`` first."""
    path = Path(path)
    lock_file = _open(path)
    names = _environment_names(lock_file)
    names.sort(key=lambda n: n != DEFAULT_ENVIRONMENT)
    return {name: _read_environment(lock_file, path, name, warn, skip_source=True) for name in names}
