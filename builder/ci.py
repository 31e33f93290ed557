"""``envyard ci``: relock (and rebuild) exactly the environments whose spec changed, and report what changed.

Three steps, each usable alone:

* :func:`discover`: the environments of a repository, from spec paths or globs, or a config file
  (``envyard.toml``, :func:`read_config`) naming each spec with its platforms and lock directory;
* :func:`plan`: which of them are stale, with the check ``envyard lock --check`` makes
  (:func:`envyard.builder.pipeline.check_directory`: content hashes, no solve);
* :func:`run`: relock the stale ones (concurrently, at most ``jobs`` at once), optionally build their images and
  hand each to a ``publish`` callback (the CLI pushes with :mod:`envyard.registry`); fresh ones cost no solve and
  no build. Every solve goes through :attr:`CiOptions.on_solve` (the hook tests count solver calls with).

:func:`render_markdown` and :meth:`CiReport.to_json` render the outcome for a pull-request comment and for machines.

>>> r = CiReport([CiResult(CiTarget("web", Path("web.yml"), Path("locks/web")), "fresh")])
>>> r.exit_code, r.counts
(0, {'fresh': 1})
>>> print(render_markdown(r).splitlines()[2])
| web | fresh |  |  |
"""

from __future__ import annotations

import glob
import threading
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from envyard.builder.errors import EnvyardError, SpecError
from envyard.builder.lock import LockOptions
from envyard.builder.lockdiff import LockDiff, PackageChange, diff_locks
from envyard.builder.model import EnvironmentLock

Status = Literal["fresh", "stale", "missing", "relocked", "rebuilt", "failed"]
CONFIG_FILE = "envyard.toml"
SPEC_NAMES = ("environment.yml", "environment.yaml", "requirements.txt")
DEFAULT_JOBS = 4


@dataclass(frozen=True, slots=True)
class CiTarget:
    """One environment of the repository: its spec, where its lock lives, and what it is built as."""

    name: str
    spec: Path
    lock_dir: Path
    platforms: tuple[str, ...] = ()
    #: ``NAMESPACE/NAME`` on an envyard server (``envyard ci --api``); default ``ci/<name>``
    environment: str | None = None
    #: image reference template of this environment (else ``--push``); ``{name}`` and ``{hash}`` are filled in
    push: str | None = None


@dataclass(frozen=True, slots=True)
class CiResult:
    target: CiTarget
    status: Status
    diff: LockDiff | None = None
    image_digest: str | None = None
    image_reference: str | None = None
    error: str | None = None
    solves: int = 0
    #: why the lock is stale (``lock --check``'s platforms), for the report
    reason: str | None = None
    build_id: int | None = None


@dataclass(frozen=True, slots=True)
class CiReport:
    results: Sequence[CiResult]
    check: bool = False

    @property
    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for result in self.results:
            found[result.status] = found.get(result.status, 0) + 1
        return found

    @property
    def solves(self) -> int:
        return sum(r.solves for r in self.results)

    @property
    def stale(self) -> list[CiResult]:
        return [r for r in self.results if r.status in ("stale", "missing")]

    @property
    def exit_code(self) -> int:
        """0 all fresh or done; 1 a solve or build failed; 2 a lock is stale or missing under ``--check``."""
        if any(r.status == "failed" for r in self.results):
            return 1
        return 2 if self.stale else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": "check" if self.check else "run",
            "counts": self.counts,
            "solves": self.solves,
            "environments": [
                {
                    "name": r.target.name, "spec": str(r.target.spec), "lock_dir": str(r.target.lock_dir),
                    "status": r.status, "solves": r.solves, "reason": r.reason,
                    "changes": r.diff.to_json() if r.diff is not None else None,
                    "image_digest": r.image_digest, "image_reference": r.image_reference,
                    "build_id": r.build_id, "error": r.error,
                }
                for r in self.results
            ],
        }


SolveHook = Callable[[CiTarget], None]
#: (target, built image, blob store) -> the pushed reference, or None when nothing was pushed
Publish = Callable[[CiTarget, Any, Any], str | None]


@dataclass(frozen=True, slots=True)
class CiOptions:
    """How :func:`run` locks and builds: the lock options (inherited per lock from its record), caches, and the
    image step."""

    lock: LockOptions
    cache_dir: Path
    environ: Mapping[str, str] | None = None
    jobs: int = DEFAULT_JOBS
    build: bool = False
    #: (target, lock) -> (image, blob store); given by the caller with ``build`` (the image needs install settings)
    build_image: Callable[[CiTarget, EnvironmentLock], tuple[Any, Any]] | None = None
    publish: Publish | None = None
    on_solve: SolveHook | None = None


# --- discovery ---------------------------------------------------------------------------------------------------


def _name_of(spec: Path, root: Path) -> str:
    """``envs/web/environment.yml`` -> ``web``; ``specs/api.yml`` -> ``api``."""
    if spec.name in SPEC_NAMES:
        return spec.parent.name or root.resolve().name
    return spec.stem


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return path


def discover(paths: Sequence[str], root: Path, lock_dir: str | None = None) -> list[CiTarget]:
    """The specs named by ``paths`` (files, directories holding an environment.yml, or globs relative to
    ``root``); each is locked in ``lock_dir`` (relative to the spec's directory; default: that directory)."""
    found: list[Path] = []
    for pattern in paths:
        matches = sorted(Path(p) for p in glob.glob(pattern, root_dir=root, recursive=True)) \
            if glob.has_magic(pattern) else [Path(pattern)]
        if not matches:
            raise SpecError(f"'{pattern}' matches no spec", field="paths",
                            hint="give spec files, directories with an environment.yml, or globs such as "
                                 "'envs/*/environment.yml'")
        for match in matches:
            path = match if match.is_absolute() else root / match
            if path.is_dir():
                spec = next((path / n for n in SPEC_NAMES if (path / n).is_file()), None)
                if spec is None:
                    raise SpecError(f"{match} holds no {' or '.join(SPEC_NAMES)}", file=match,
                                    hint="name the spec file itself")
                path = spec
            elif not path.is_file():
                raise SpecError(f"spec not found: {match}", file=match, hint="check the path (relative to "
                                f"{root})")
            found.append(_relative(path, root))
    targets = [CiTarget(_name_of(p, root), p, p.parent / lock_dir if lock_dir else p.parent)
               for p in dict.fromkeys(found)]
    _check_unique(targets, root / "envyard.toml")
    return targets


def _check_unique(targets: Iterable[CiTarget], source: Path) -> None:
    seen: dict[str, CiTarget] = {}
    for target in targets:
        if target.name in seen:
            raise SpecError(f"two environments are called '{target.name}' ({seen[target.name].spec} and "
                            f"{target.spec})", file=source,
                            hint="name them apart in envyard.toml ([[environment]] name = ...)")
        seen[target.name] = target


_ENV_KEYS = {"name", "spec", "lock_dir", "platforms", "environment", "push"}


def read_config(path: Path) -> tuple[list[CiTarget], dict[str, Any]]:
    """The environments an ``envyard.toml`` lists, and its ``[ci]`` table (``push``, ``jobs``).

    .. code-block:: toml

        [ci]
        push = "registry.example.org/envs/{name}:{hash}"

        [[environment]]
        name = "web"
        spec = "envs/web/environment.yml"
        lock_dir = "envs/web/locks"
        platforms = ["linux-64"]

    Paths are relative to the file's directory.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"config not found: {path}", file=path, hint="pass --config envyard.toml, or spec paths")\
            from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"not valid TOML: {exc}", file=path, hint="fix the syntax of the config") from None
    root = path.parent
    entries = document.get("environment", [])
    if not isinstance(entries, list) or not entries:
        raise SpecError("the config lists no environment", file=path, field="environment",
                        hint='add [[environment]] tables with spec = "path/to/environment.yml"')
    targets = []
    for index, entry in enumerate(entries):
        where = f"environment[{index}]"
        unknown = set(entry) - _ENV_KEYS
        if unknown:
            raise SpecError(f"unknown key {', '.join(sorted(unknown))}", file=path, field=where,
                            hint="keys: " + ", ".join(sorted(_ENV_KEYS)))
        if not isinstance(entry.get("spec"), str):
            raise SpecError("'spec' (the spec's path) is missing", file=path, field=f"{where}.spec",
                            hint='add spec = "envs/NAME/environment.yml"')
        spec = root / entry["spec"]
        if not spec.is_file():
            raise SpecError(f"spec not found: {entry['spec']}", file=path, field=f"{where}.spec",
                            hint=f"paths are relative to {root}")
        platforms = entry.get("platforms", [])
        if not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms):
            raise SpecError("'platforms' must be a list of platform names", file=path, field=f"{where}.platforms",
                            hint='for example platforms = ["linux-64", "osx-arm64"]')
        lock_dir = root / entry["lock_dir"] if "lock_dir" in entry else spec.parent
        targets.append(CiTarget(str(entry.get("name") or _name_of(spec, root)), _relative(spec, Path.cwd()),
                                _relative(lock_dir, Path.cwd()),
                                tuple(platforms), entry.get("environment"), entry.get("push")))
    _check_unique(targets, path)
    settings = document.get("ci", {})
    if not isinstance(settings, dict):
        raise SpecError("[ci] must be a table", file=path, field="ci", hint='write [ci] push = "..."')
    return targets, settings


# --- plan --------------------------------------------------------------------------------------------------------


def _target_options(target: CiTarget, options: LockOptions) -> LockOptions:
    if target.platforms:
        return replace(options, platforms=target.platforms, inherit=options.inherit - {"platforms"})
    return options


def plan(targets: Sequence[CiTarget], options: LockOptions,
         environ: Mapping[str, str] | None = None) -> list[CiResult]:
    """Each target as fresh, stale or missing (``envyard lock --check``'s verdict; no solve)."""
    from envyard.builder.pipeline import check_directory

    results = []
    for target in targets:
        found = check_directory(target.spec, target.lock_dir, _target_options(target, options), environ)
        check = found.check
        reasons = [f"{p}: {found.details.get(p, 'spec changed')}" for p in check.stale]
        reasons += [f"{p}: not locked" for p in check.missing if not check.lock_missing]
        reasons += [f"{p}: no longer requested" for p in check.extra]
        reason = "no lock yet" if check.lock_missing else "; ".join(reasons) or None
        results.append(CiResult(target, check.status, reason=reason))
    return results


# --- run ---------------------------------------------------------------------------------------------------------


def previous_lock(lock_dir: Path) -> EnvironmentLock | None:
    """The lock in ``lock_dir`` as it is before a relock (None without one, or when it cannot be read)."""
    from envyard.builder.lockfiles import read_lockfile
    from envyard.builder.pipeline import CONDA_LOCK_FILE

    path = lock_dir / CONDA_LOCK_FILE
    if not path.is_file():
        return None
    try:
        return read_lockfile(path)
    except EnvyardError:
        return None


def _relock(planned: CiResult, options: CiOptions) -> CiResult:
    from envyard.builder.pipeline import lock_to_directory

    target = planned.target
    before = previous_lock(target.lock_dir)
    try:
        if options.on_solve is not None:
            options.on_solve(target)
        made = lock_to_directory(target.spec, target.lock_dir, _target_options(target, options.lock),
                                 cache_dir=options.cache_dir, environ=options.environ)
    except EnvyardError as err:
        return replace(planned, status="failed", error=err.one_line(), solves=1)
    result = replace(planned, status="relocked", solves=1,
                     diff=diff_locks(before or EnvironmentLock({}), made.lock))
    if not options.build or options.build_image is None:
        return result
    try:
        image, store = options.build_image(target, made.lock)
        reference = options.publish(target, image, store) if options.publish is not None else None
    except EnvyardError as err:
        return replace(result, status="failed", error=err.one_line())
    return replace(result, status="rebuilt", image_digest=image.digest, image_reference=reference)


def run(targets: Sequence[CiTarget], options: CiOptions, *, check: bool = False) -> CiReport:
    """Plan, then (unless ``check``) relock and optionally build the stale targets, ``options.jobs`` at once."""
    planned = plan(targets, options.lock, options.environ)
    if check:
        return CiReport(planned, check=True)
    stale = [i for i, r in enumerate(planned) if r.status != "fresh"]
    results = list(planned)
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=max(1, min(options.jobs, len(stale) or 1)),
                            thread_name_prefix="envyard-ci") as pool:
        for index, done in zip(stale, pool.map(lambda i: _relock(planned[i], options), stale), strict=True):
            with lock:
                results[index] = done
    return CiReport(results)


# --- rendering ---------------------------------------------------------------------------------------------------


def _version(value: str | None) -> str:
    return value or "-"


def _change_text(kind: str, change: PackageChange) -> str:
    if kind == "added":
        return f"+ {change.name} {_version(change.new)}"
    if kind == "removed":
        return f"- {change.name} {_version(change.old)}"
    return f"{change.name} {_version(change.old)} → {_version(change.new)}"


def change_lines(diff: LockDiff | None) -> list[str]:
    """One line per added, removed or changed package (``numpy 2.1.0=py312_0 → 2.2.0=py312_0``); a package that
    changed alike on several platforms is listed once, with its platforms when they are not all of them."""
    if diff is None:
        return []
    seen: dict[str, list[str]] = {}
    for platform, pdiff in diff.platforms.items():
        for kind in ("added", "removed", "changed"):
            for change in getattr(pdiff, kind):
                seen.setdefault(_change_text(kind, change), []).append(platform)
    every = len(diff.platforms)
    return [text if len(platforms) == every else f"{text} ({', '.join(platforms)})"
            for text, platforms in seen.items()]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: CiReport, title: str = "envyard") -> str:
    """The report as a Markdown table (for a pull-request comment)."""
    lines = [
        "| environment | status | packages | image |",
        "| --- | --- | --- | --- |",
    ]
    for r in report.results:
        changes = change_lines(r.diff)
        if r.status in ("stale", "missing"):
            changes = [f"lock {r.status}: {r.reason}" if r.reason else f"lock {r.status}"]
        elif r.status == "failed":
            changes = [f"**error**: {r.error}"]
        elif r.status in ("relocked", "rebuilt") and not changes:
            changes = ["no package changes"]
        image = f"`{r.image_digest}`" if r.image_digest else ""
        if r.image_reference:
            image = f"{image}<br>{r.image_reference}" if image else r.image_reference
        cells = [_cell(r.target.name), r.status, "<br>".join(_cell(c) for c in changes), _cell(image)]
        lines.append("| " + " | ".join(cells) + " |")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report.counts.items()))
    return "\n".join([*lines, "", f"{title}: {counts}; {report.solves} solve(s)", ""])


@dataclass
class SolveCounter:
    """A :data:`SolveHook` that counts solves per target name (thread-safe)."""

    calls: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, target: CiTarget) -> None:
        with self._lock:
            self.calls[target.name] = self.calls.get(target.name, 0) + 1
