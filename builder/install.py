"""Install stage: a platform's lock becomes a conda prefix, atomically.

The prefix is built in a hidden sibling directory (``.NAME.envyard-<pid>-<rand>``)
and renamed into place only when everything succeeded, so the target is either
absent, the old prefix, or the complete new one. A failure removes the staging
directory; a killed process leaves one that the next install beside it removes.

Packages come from a layered package cache (a writable layer first, then
read-only shared layers) via rattler, which hardlinks from the cache. Files are
relocated for ``target_prefix`` (rattler's ``alternative_target_prefix``), which may
differ from where the prefix is built: images build at a temporary path for
``/opt/env``. ``conda-meta`` records keep the lock's URLs, never cache paths.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import rattler

from envyard.builder.errors import EnvyardError, InstallError, SdistNotAllowedError
from envyard.builder.fetch import FetchedPackage, fetch_packages, remove_archive_copies
from envyard.builder.model import PlatformLock
from envyard.builder.progress import NullReporter, Reporter, Stage
from envyard.builder.records import to_repodata_record

#: conda-meta keys that name the machine that installed the prefix (cache paths).
_MACHINE_KEYS = ("extracted_package_dir", "package_tarball_full_path")


@dataclass(frozen=True, slots=True)
class InstallOptions:
    """How to install: cache layers (writable first), the path the prefix will live at, uv."""

    cache_layers: Sequence[Path]
    target_prefix: str | None = None
    uv: str | None = None
    pip_cache_dir: Path | None = None
    replace: bool = False
    allow_sdists: bool = False  # without it uv installs wheels only (building an sdist runs its code)


@dataclass(frozen=True, slots=True)
class InstallResult:
    prefix: Path
    target_prefix: str
    conda_packages: int
    pip_packages: int
    fetched: int
    from_cache: int


def host_platform() -> str:
    from rattler.platform import Subdir

    return str(Subdir.current())


def _stage_prefix(prefix: Path) -> str:
    return f".{prefix.name}.envyard-"


def remove_stale_stages(prefix: Path) -> None:
    """Remove staging directories beside ``prefix`` left by killed installs (their process is gone)."""
    if not prefix.parent.is_dir():
        return
    for stale in prefix.parent.glob(_stage_prefix(prefix) + "*"):
        pid_text = stale.name[len(_stage_prefix(prefix)) :].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and _alive(int(pid_text)):
            continue
        shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def scrub_conda_meta(prefix: Path, fetched: Sequence[FetchedPackage]) -> None:
    """Put the lock's URL and channel back into each record and drop paths of this machine's caches."""
    by_stem = {f"{f.package.name}-{f.package.version}-{f.package.build}": f.package for f in fetched}
    for record_file in sorted((prefix / "conda-meta").glob("*.json")):
        record = json.loads(record_file.read_text())
        package = by_stem.get(record_file.stem)
        if package is not None:
            record["url"], record["channel"], record["fn"] = package.url, package.channel, package.file_name
        for key in _MACHINE_KEYS:
            record.pop(key, None)
        if isinstance(record.get("link"), dict):
            record["link"]["source"] = ""  # conda-pack reads the key; "" means "not in a package cache"
        record_file.write_text(json.dumps(record, sort_keys=True) + "\n")  # no indent: the C encoder
    history = prefix / "conda-meta" / "history"
    lines = ["==> envyard install <==", "# cmd: envyard install"]
    lines += [f"+{f.package.channel.rstrip('/')}::{f.package.name}-{f.package.version}-{f.package.build}"
              for f in sorted(fetched, key=lambda f: f.package.name)]
    history.write_text("\n".join(lines) + "\n")
    (prefix / "CACHEDIR.TAG").unlink(missing_ok=True)


def _install_pip(lock: PlatformLock, stage: Path, target: str, options: InstallOptions) -> None:
    from envyard.builder.pip_resolve import locked_pip_to_requirement_line

    python = stage / "bin" / "python"
    if not python.exists():
        raise InstallError(
            f"the lock has {len(lock.pip)} pip packages but no python in the environment",
            hint="add python to the spec's conda dependencies and re-lock",
        )
    sdists = sorted(p.normalized_name for p in lock.pip if not urlsplit(p.url).path.endswith(".whl"))
    if sdists and not options.allow_sdists:
        from envyard.builder.pip_resolve import SDIST_HINT

        raise SdistNotAllowedError(f"pip package {', '.join(sdists)} is locked as a source distribution, and "
                                   "building sdists is not allowed", hint=SDIST_HINT, details={"packages": sdists})
    uv = options.uv or shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    bin_dir = stage / "bin"
    before = set(bin_dir.iterdir()) if bin_dir.is_dir() else set()
    with tempfile.TemporaryDirectory(prefix="envyard-pip-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("".join(locked_pip_to_requirement_line(p) + "\n" for p in lock.pip))
        command = [uv, "pip", "install", "--no-deps", "--require-hashes", "--no-config", "--link-mode", "copy",
                   "--prefix", str(stage), "--python", str(python), "-r", str(requirements)]
        if options.pip_cache_dir is not None:
            command += ["--cache-dir", str(options.pip_cache_dir)]
        if not options.allow_sdists:
            command.append("--no-build")
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InstallError(f"pip packages could not be installed: {result.stderr.strip()[-2000:]}",
                           hint="check that the lock's pip URLs are reachable and their hashes unchanged")
    _retarget_scripts(sorted(set(bin_dir.iterdir()) - before), f"{target}/bin/python")


def _retarget_scripts(scripts: Sequence[Path], python: str) -> None:
    """Point the Python shebang of scripts pip just wrote at the environment's Python at its target path."""
    for script in scripts:
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        first, newline, rest = data.partition(b"\n")
        if first.startswith(b"#!") and b"python" in first:
            script.write_bytes(f"#!{python}".encode() + newline + rest)


def install_lock(
    lock: PlatformLock,
    prefix: Path,
    options: InstallOptions,
    reporter: Reporter | None = None,
) -> InstallResult:
    """Install every package of ``lock`` into ``prefix`` (created atomically; see the module docs)."""
    reporter = reporter or NullReporter()
    prefix = prefix.absolute()
    target = options.target_prefix or str(prefix)
    if prefix.exists() and not options.replace:
        raise InstallError("a directory is already there", file=prefix,
                           hint="choose another --prefix, or pass --force to replace it")
    if lock.pip and lock.platform != host_platform():
        raise InstallError(
            f"the lock's pip packages for {lock.platform} cannot be installed on {host_platform()}",
            hint="build this platform on a matching worker, or move the pip packages to conda",
        )
    prefix.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(prefix)
    reporter.stage_started(Stage.INSTALL, f"{len(lock.conda)} packages -> {prefix}")
    fetched = fetch_packages(lock.conda, options.cache_layers)
    stage = prefix.parent / f"{_stage_prefix(prefix)}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        _link(lock, fetched, stage, target, options)
        if lock.pip:
            _install_pip(lock, stage, target, options)
        scrub_conda_meta(stage, fetched)
        _swap_into_place(stage, prefix)
    except EnvyardError:
        raise
    except Exception as exc:
        raise InstallError(f"installing into {prefix} failed: {exc}", file=prefix,
                           hint="nothing was left at the target; fix the cause and run the install again") from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    remove_archive_copies(fetched, options.cache_layers[0])
    cached = sum(1 for f in fetched if f.cached_in is not None)
    reporter.stage_finished(Stage.INSTALL, str(prefix), packages=len(lock.conda), cached=cached)
    return InstallResult(prefix, target, len(lock.conda), len(lock.pip), len(fetched) - cached, cached)


def _link(lock: PlatformLock, fetched: Sequence[FetchedPackage], stage: Path, target: str,
          options: InstallOptions) -> None:
    records = []
    for item in fetched:
        record = to_repodata_record(item.package)
        if item.archive is not None:
            record.url = item.local_url
        records.append(record)
    from rattler.platform import Subdir

    layers: list[str | os.PathLike[str]] = [str(p) for p in options.cache_layers]
    for layer in options.cache_layers[:1]:
        layer.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(rattler.install(
            records, stage, package_cache=rattler.PackageCache.new_layered(layers),
            platform=Subdir(lock.platform), installed_packages=[], execute_link_scripts=False,
            show_progress=False, alternative_target_prefix=target,
        ))
    except Exception as exc:
        raise InstallError(f"linking the environment failed: {exc}", file=stage.parent,
                           hint="nothing was left at the target; the message names the package and file") from None


def _swap_into_place(stage: Path, prefix: Path) -> None:
    if not prefix.exists():
        stage.rename(prefix)
        return
    old = prefix.parent / f"{_stage_prefix(prefix)}{os.getpid()}-old-{secrets.token_hex(4)}"
    prefix.rename(old)
    try:
        stage.rename(prefix)
    except OSError:
        old.rename(prefix)
        raise
    shutil.rmtree(old, ignore_errors=True)
