"""Resolve the pip section of a spec for one target platform with ``uv pip compile``.

uv runs as a subprocess against the target's Python version and wheel tags (it never
needs the target's interpreter) and writes a PEP 751 ``pylock.toml`` with one URL and
hash per package, which is parsed here into :class:`LockedPipPackage` objects.

Packages the conda solve already installs (``conda_provided``) are never taken from an
index: each becomes a tiny dependency-free stub wheel ``{name}-{version}-py3-none-any.whl``
in a private temp dir, and a URL constraint ``name @ file:///.../stub.whl`` pins every
requirement on that name to the stub. The resolver therefore still sees conda's version
(``numpy<2`` against conda's numpy 2.1.0 is a conflict), never asks an index for it (works
offline), and the stubs are dropped from the result. Limitation: conda names are taken to
be PyPI names after PEP 503 normalization (true for most, not for e.g. ``pytorch``/``torch``);
a conda version that is not PEP 440 cannot be stubbed, so that name is excluded from the
resolution instead (never fetched, but its version is not checked).

Wheels only, unless ``allow_sdists``: resolving a source distribution without static metadata runs its build
backend (arbitrary code from the index) on this machine, so by default uv gets ``--no-build`` and a requirement
that only an sdist satisfies fails with :class:`~builder.errors.SdistNotAllowedError` naming the package.

>>> uv_python_platform(PipTarget("linux-64", "3.12.13", glibc_version="2.34"))
'x86_64-manylinux_2_34'
>>> locked_pip_to_requirement_line(LockedPipPackage("b", "2.0", "https://x/b-2.0-py3-none-any.whl", "ab"))
'b @ https://x/b-2.0-py3-none-any.whl --hash=sha256:ab'
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import subprocess
import tempfile
import tomllib
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import HeaderParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from envyard.builder.errors import LockfileError, PipResolutionError, SdistNotAllowedError
from envyard.builder.model import LockedPipPackage, normalize_pypi_name
from envyard.builder.spec_pip import redact_url
from envyard.builder.url_policy import UrlPolicy

_ARCH = {"linux-64": "x86_64", "linux-aarch64": "aarch64", "osx-64": "x86_64", "osx-arm64": "aarch64"}
_OTHER_PLATFORMS = {"win-64": "x86_64-pc-windows-msvc", "win-arm64": "aarch64-pc-windows-msvc"}
_MANYLINUX_MINORS = (17, 28, *range(31, 41))  # the manylinux_2_X targets uv 0.13 knows
_MACOS_DEFAULT = {"osx-64": "10.13", "osx-arm64": "11.0"}  # conda-forge's default __osx
_UV_ENV_KEPT = re.compile(
    r"UV_INDEX_\w+_(USERNAME|PASSWORD)|UV_(HTTP_TIMEOUT|HTTP_RETRIES|NATIVE_TLS|SYSTEM_CERTS|INSECURE_HOST"
    r"|KEYRING_PROVIDER|OFFLINE|CACHE_DIR|CONCURRENT_\w+|NO_PROGRESS)"
)
_VALID_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class PipTarget:
    """The platform a pip resolution is for, as the conda solve describes it."""

    platform: str  # conda platform: linux-64, linux-aarch64, osx-64, osx-arm64, win-64
    python_version: str  # the solved conda python version, e.g. "3.12.13"
    glibc_version: str | None = "2.28"  # from __glibc (linux): the manylinux tag ceiling
    macos_version: str | None = None  # from __osx (osx), e.g. "11.0"


def uv_python_platform(target: PipTarget) -> str:
    """The ``--python-platform`` value for *target* (manylinux tag capped by its glibc)."""
    if target.platform in _OTHER_PLATFORMS:
        return _OTHER_PLATFORMS[target.platform]
    arch = _ARCH.get(target.platform)
    if arch is None:
        raise PipResolutionError(
            f"pip packages cannot be resolved for platform {target.platform}",
            hint="uv supports linux-64, linux-aarch64, osx-64, osx-arm64, win-64 and win-arm64",
        )
    if target.platform.startswith("osx"):
        return f"{arch}-apple-darwin"
    glibc = target.glibc_version or "2.17"
    try:
        major, minor = (int(part) for part in glibc.split(".")[:2])
    except ValueError:
        raise PipResolutionError(f"cannot read glibc version {glibc!r}", hint="use e.g. __glibc=2.28") from None
    usable = [m for m in _MANYLINUX_MINORS if (major, minor) >= (2, m)]
    if not usable:
        raise PipResolutionError(
            f"glibc {glibc} is older than manylinux2014 (glibc 2.17); no PyPI wheel can be chosen safely",
            hint="declare a newer __glibc system requirement",
        )
    return f"{arch}-manylinux_2_{max(usable)}"


def locked_pip_to_requirement_line(p: LockedPipPackage) -> str:
    """A line for ``uv pip install --no-deps --require-hashes -r``."""
    if not p.sha256:
        raise LockfileError(f"pip package {p.name} {p.version} has no sha256 in the lock",
                            hint="re-lock the environment")
    return f"{p.normalized_name} @ {p.url} --hash=sha256:{p.sha256}"


def resolve_pip_requirements(
    requirements: Sequence[str],
    target: PipTarget,
    *,
    conda_provided: Mapping[str, str] = {},  # noqa: B006 - read only
    index_url: str | None = None,
    extra_index_urls: Sequence[str] = (),
    find_links: Sequence[str] = (),
    no_index: bool = False,
    exclude_newer: datetime | None = None,
    cache_dir: Path | None = None,
    uv_executable: str | None = None,
    environ: Mapping[str, str] | None = None,
    timeout: float | None = 600,
    allow_sdists: bool = False,
    url_policy: UrlPolicy | None = None,
) -> tuple[LockedPipPackage, ...]:
    """Pin *requirements* (PEP 508 lines) for *target*: URL and sha256 per package, sorted by name.

    Only wheels are considered unless *allow_sdists* (building an sdist runs the package's code).
    ``url_policy`` (service builds): the indexes, find-links and direct URLs are checked against it (hosts
    freshly resolved) before uv runs.
    """
    parsed = []
    for line in requirements:
        try:
            parsed.append(Requirement(line))
        except InvalidRequirement as exc:
            raise PipResolutionError(f"invalid pip requirement {line!r}: {exc}",
                                     hint="write PEP 508 requirements, e.g. 'requests>=2,<3'") from None
    if url_policy is not None:
        _check_urls(url_policy, [index_url, *extra_index_urls], find_links, [r.url for r in parsed if r.url])
    if not requirements:
        return ()
    platform = uv_python_platform(target)
    provided = {normalize_pypi_name(n): v for n, v in conda_provided.items() if _VALID_NAME.fullmatch(n)}
    with tempfile.TemporaryDirectory(prefix="envyard-pip-") as tmp:
        work = Path(tmp)
        stubbed = _write_conda_stubs(work, provided)
        (work / "requirements.in").write_text("".join(f"{r}\n" for r in requirements))
        args = [_find_uv(uv_executable), "pip", "compile", "requirements.in", "--output-file", "pylock.toml",
                "--format", "pylock.toml", "--generate-hashes", "--no-header", "--no-annotate",
                "--python-version", target.python_version, "--python-platform", platform,
                "--no-config", "--no-python-downloads", "--color", "never", "--quiet"]
        if provided:
            args += ["--constraints", "conda-constraints.txt"]
        if len(stubbed) < len(provided):
            args += ["--excludes", "conda-excludes.txt"]
        if index_url:
            args += ["--index-url", index_url]
        for url in extra_index_urls:
            args += ["--extra-index-url", url]
        for link in find_links:
            args += ["--find-links", link if "://" in link else str(Path(link).resolve())]
        if no_index:
            args.append("--no-index")
        if not allow_sdists:
            args.append("--no-build")
        if exclude_newer is not None:
            when = exclude_newer if exclude_newer.tzinfo else exclude_newer.replace(tzinfo=UTC)
            args += ["--exclude-newer", when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")]
        if cache_dir is not None:
            args += ["--cache-dir", str(cache_dir)]
        stderr = _run(args, work, _subprocess_env(environ, target), timeout)
        if stderr is not None:
            raise _resolution_error(stderr, requirements, target, provided)
        lock = tomllib.loads((work / "pylock.toml").read_text())
        found = [_to_locked(pkg, work) for pkg in lock.get("packages", [])]
    result = [p for p in found if p.normalized_name not in stubbed]
    return tuple(sorted(result, key=lambda p: (p.normalized_name, p.version)))


def _check_urls(policy: UrlPolicy, indexes: Sequence[str | None], find_links: Sequence[str],
                direct: Sequence[str]) -> None:
    checked = policy.cached()
    for url in filter(None, indexes):
        checked.check(url, what="pip index", shown=redact_url(url), field="pip")
    for link in find_links:
        checked.check(link if "://" in link else Path(link).resolve().as_uri(), what="pip find-links",
                      shown=redact_url(link), field="pip")
    for url in direct:
        bare = url.split("+", 1)[1] if "+" in url.split("://", 1)[0] else url
        checked.check(bare, what="pip requirement URL", shown=redact_url(url), field="pip")


def _find_uv(uv_executable: str | None) -> str:
    if uv_executable:
        return uv_executable
    try:
        import uv

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        raise PipResolutionError("the uv executable was not found; pip requirements cannot be resolved",
                                 hint="install uv ('pip install uv') or configure its path") from None


def _write_conda_stubs(work: Path, provided: Mapping[str, str]) -> set[str]:
    """Write stub wheels and the constraints/excludes files; return the stubbed names."""
    stubs, constraints, excludes = work / "conda-stubs", [], []
    stubs.mkdir()
    for name, version in sorted(provided.items()):
        try:
            version = str(Version(version))  # canonical: "1.0-1" -> "1.0.post1", safe in a file name
        except InvalidVersion:
            excludes.append(name)
            continue
        dist = name.replace("-", "_")
        files = {f"{dist}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                 f"{dist}-{version}.dist-info/WHEEL":
                 "Wheel-Version: 1.0\nGenerator: envyard\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
        record = [f"{arc},sha256={_b64_sha256(data.encode())},{len(data.encode())}" for arc, data in files.items()]
        files[f"{dist}-{version}.dist-info/RECORD"] = "\n".join([*record, f"{dist}-{version}.dist-info/RECORD,,"])
        path = stubs / f"{dist}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as zf:
            for arc, data in files.items():
                zf.writestr(zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0)), data)
        constraints.append(f"{name} @ {path.as_uri()}\n")
    (work / "conda-constraints.txt").write_text("".join(constraints))
    (work / "conda-excludes.txt").write_text("".join(f"{n}\n" for n in excludes))
    return {n for n in provided if n not in excludes}


def _b64_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _subprocess_env(environ: Mapping[str, str] | None, target: PipTarget) -> dict[str, str]:
    """The uv environment: credentials/proxies pass, settings that would change the result do not."""
    base = os.environ if environ is None else environ
    env = {k: v for k, v in base.items() if not k.startswith("UV_") or _UV_ENV_KEPT.fullmatch(k)}
    env.pop("MACOSX_DEPLOYMENT_TARGET", None)
    if target.platform in _MACOS_DEFAULT:  # uv reads the macOS tag ceiling from this variable
        env["MACOSX_DEPLOYMENT_TARGET"] = target.macos_version or _MACOS_DEFAULT[target.platform]
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float | None) -> str | None:
    """Run uv; ``None`` on success, else its stderr. Kills uv and its children on timeout."""
    try:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as exc:
        raise PipResolutionError(f"cannot run uv ({args[0]}): {exc.strerror or exc}",
                                 hint="install uv ('pip install uv') or configure its path") from None
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise PipResolutionError(f"pip resolution did not finish within {timeout:g} seconds",
                                 hint="check that the package index is reachable, or raise the timeout") from None
    return None if proc.returncode == 0 else stderr


_NEEDS_BUILD = re.compile(r"Wheels are required for `([^`]+)` because building from source is disabled")
SDIST_HINT = ("envyard resolves pip packages from wheels only, because building a source distribution runs its "
              "code; pin a version that has a wheel for the platform, or have an admin allow sdists for the "
              "namespace ('envyard namespace sdists NAMESPACE on')")


_NETWORK_FAILURE = re.compile(
    r"Could not resolve host[^\n]*|Failed to connect to[^\n]*|Couldn't connect to server|dns error[^\n]*|"
    r"failed to lookup address[^\n]*|Connection refused[^\n]*|Network is unreachable|Connection timed out|"
    r"operation timed out|Network connectivity is disabled[^\n]*", re.IGNORECASE)
_FAILED_URL = re.compile(r"unable to access '([^']+)'|request for url \(([^)\s]+)\)|"
                         r"Failed to fetch: `?([^`\s]+?)`?:?(?:\s|$)|git\+([^`\s]+)")


def _network_error(text: str, target: PipTarget) -> PipResolutionError | None:
    """uv could not fetch something (a git clone, a download, the index): say which URL and host, not a conflict."""
    failure = _NETWORK_FAILURE.search(text)
    if failure is None:
        return None
    found = _FAILED_URL.search(text)
    url = next((g for g in found.groups() if g), "").rstrip("/:") if found else ""
    host = urlsplit(url).hostname if url else None
    what = f"{url}: {host} could not be reached" if host else "a package index or URL could not be reached"
    return PipResolutionError(
        f"pip requirements for {target.platform}: cannot fetch {what} ({failure.group(0).strip()})",
        hint=f"this is a network failure, not a conflict: check that this machine reaches {host or 'the index'} "
             "(network, proxy, DNS, credentials)",
        details={"platform": target.platform, "url": url or None, "host": host, "uv_output": text},
    )


def _resolution_error(stderr: str, requirements: Sequence[str], target: PipTarget,
                      provided: Mapping[str, str]) -> PipResolutionError:
    needs_build = sorted({normalize_pypi_name(n) for n in _NEEDS_BUILD.findall(stderr)})
    if needs_build:
        return SdistNotAllowedError(
            f"pip package {', '.join(needs_build)} has no wheel for {target.platform} (Python "
            f"{target.python_version}), only a source distribution, and building sdists is not allowed",
            hint=SDIST_HINT,
            details={"platform": target.platform, "python_version": target.python_version,
                     "requirements": list(requirements), "packages": needs_build},
        )
    lines, skipping = [], False
    for line in stderr.splitlines():
        if line.startswith(("warning:", "error:", "hint:")):
            skipping = line.startswith("warning:")
        if not skipping and line.strip():
            lines.append(line.rstrip())
    text = re.sub(r"://[^/@\s]+@", "://***@", "\n".join(lines[:25]) or stderr.strip() or "uv failed")
    text = re.sub(r"\n\s*cause: ", ": ", re.sub(r"^error: ", "", text))
    if (network := _network_error(text, target)) is not None:
        return network
    named = set(re.findall(r"([A-Za-z0-9][\w.-]*?)(?:\[[^\]]*\])?(?:==|>=|<=|!=|~=|<|>)", text))
    named |= set(re.findall(r"(?:versions of|you require|depends? on|available for) `?([A-Za-z0-9][\w.-]*)", text))
    packages = sorted({normalize_pypi_name(n) for n in named})
    from_conda = [n for n in packages if n in provided]
    if from_conda:
        hint = (", ".join(f"{n} {provided[n]}" for n in from_conda) + " comes from the conda solve and pip may not"
                " replace it; change the conda pin or the pip requirement that conflicts with it")
    elif "matching platform tag" in text or "matching Python ABI tag" in text:
        hint = f"a package has no wheel for {target.platform}; pin a version that has one or take it from conda"
    elif "Failed to fetch" in text or "Could not connect" in text or "network" in text.lower():
        hint = "check that the package index is reachable and the credentials are right"
    else:
        hint = "loosen or remove the conflicting pip requirements"
    return PipResolutionError(
        f"pip requirements cannot be resolved for {target.platform} (Python {target.python_version}): {text}",
        hint=hint,
        details={"platform": target.platform, "python_version": target.python_version,
                 "requirements": list(requirements), "packages": packages, "uv_output": text},
    )


def _to_locked(pkg: Mapping[str, Any], work: Path) -> LockedPipPackage:
    name, version = str(pkg["name"]), str(pkg.get("version", ""))
    wheels = pkg.get("wheels") or []
    artifact = wheels[0] if wheels else pkg.get("archive") or pkg.get("sdist")
    url = artifact.get("url") if artifact else None
    if artifact and not url and artifact.get("path"):
        url = (work / artifact["path"]).resolve().as_uri()
    sha256 = (artifact or {}).get("hashes", {}).get("sha256")
    if not url or not sha256:
        raise PipResolutionError(f"pip package {name} cannot be locked: it has no downloadable file with a sha256",
                                 hint="VCS and local-directory requirements cannot be locked; use a wheel or sdist")
    requires_dist, requires_python = _local_metadata(url)
    return LockedPipPackage(name=name, version=version, url=url, sha256=sha256,
                            requires_dist=requires_dist, requires_python=requires_python)


def _local_metadata(url: str) -> tuple[tuple[str, ...], str | None]:
    """Requires-Dist and Requires-Python of a local wheel; unknown (empty) for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "file" or not parts.path.endswith(".whl"):
        return (), None
    try:
        with zipfile.ZipFile(unquote(parts.path)) as zf:
            meta = next(n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
            headers = HeaderParser().parsestr(zf.read(meta).decode("utf-8", "replace"))
    except (OSError, zipfile.BadZipFile, StopIteration):
        return (), None
    return tuple(headers.get_all("Requires-Dist") or ()), headers.get("Requires-Python")
