"""Lockfile readers and writers against real lockfiles, conda-lock's own parser/CLI and rattler."""

from __future__ import annotations

import ast
import csv
import os
import random
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest
import yaml
from rattler import LockFile
from rattler.lock import CondaLockedBinaryPackage, CondaLockedSourcePackage, PypiLockedPackage

from envyard.builder.errors import LockfileError
from envyard.builder.lockfiles import (
    parse_conda_lock,
    parse_explicit,
    parse_pixi_lock,
    read_lockfile,
    render_conda_lock,
    render_explicit,
    write_lock_files,
    write_pixi_lock,
)
from envyard.builder.lockfiles._common import toposort_names
from envyard.builder.lockfiles._yaml import yaml_scalar
from envyard.builder.model import EnvironmentLock, LockedCondaPackage, LockedPipPackage, PlatformLock

P = TypeVar("P", LockedCondaPackage, LockedPipPackage)
REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT.parent / "shared" / "data"
LOCKS = DATA / "locks"
RATTLER_FIXTURES = DATA / "fixtures" / "rattler-lock-fixtures" / "test-data" / "conda-lock"
CONDA_LOCK_FIXTURES = DATA / "fixtures" / "conda-lock" / "tests"

if not LOCKS.is_dir():
    pytest.skip(f"shared data not found at {DATA} (it sits beside the checkout as ../shared)", allow_module_level=True)

CONDA_LOCK_FILES = sorted((LOCKS / "conda-lock").iterdir())
LEGACY_PIXI = LOCKS / "pixi" / "prefix-dev__pixi__examples_jupyterlab_pixi.lock@legacy-condalock-fmt-2023-08"
PIXI_FILES = sorted(p for p in (LOCKS / "pixi").iterdir() if p != LEGACY_PIXI)
EXPLICIT_FILES = sorted((LOCKS / "explicit").iterdir())
RATTLER_FIXTURE_FILES = sorted(RATTLER_FIXTURES.rglob("*.yml"))
CONDA_LOCK_FIXTURE_FILES = sorted(CONDA_LOCK_FIXTURES.glob("*/conda-lock.yml"))
PANGEO_ML = LOCKS / "conda-lock" / "pangeo-data__pangeo-docker-images__ml-notebook_conda-lock.yml"
WITH_PIP = LOCKS / "conda-lock" / "conda__conda-lock__tests_test-v2-to-v3-upgrade_conda-lock-v2.5.8.yml"
JUPYTERLAB_PIXI = LOCKS / "pixi" / "prefix-dev__pixi__examples_jupyterlab_pixi.lock"
ROS_PIXI = LOCKS / "pixi" / "prefix-dev__pixi__docs_source_files_pixi_workspaces_pixi_build_ros_ws_pixi.lock"
CONDA_LOCK_PIXI = LOCKS / "pixi" / "conda__conda-lock__pixi.lock"


def rendered(packages: Iterable[P]) -> list[P]:
    """The packages ``conda-lock render`` puts in an explicit file by default: categories main and dev."""
    return [p for p in packages if any(c.name in ("main", "dev") for c in p.categories)]


def _ids(paths: Iterable[Path]) -> list[str]:
    return [p.name[:60] for p in paths]


def _sources() -> dict[str, str]:
    with open(LOCKS / "SOURCES.tsv", newline="") as fh:
        return {row["file"]: row["format"] for row in csv.DictReader(fh, delimiter="\t")}


def _expected_totals(path: Path) -> dict[str, int]:
    """Package totals over all platforms as SOURCES.tsv records them (independently of our code)."""
    fmt = _sources()[f"{path.parent.name}/{path.name}"]
    if "urls" in fmt:
        return {"conda": int(fmt.rsplit(";", 1)[1].split()[0]), "pip": 0}
    pkgs = ast.literal_eval(fmt.split("pkgs=", 1)[1].split("}", 1)[0] + "}")
    return {"conda": pkgs.get("conda", 0), "pip": pkgs.get("pip", 0)}


def depends_meaning(depends: Iterable[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Dependencies as constraints per name: ``python`` next to ``python >=3.10`` adds nothing."""
    by_name: dict[str, set[str]] = {}
    for spec in depends:
        name, _, rest = spec.strip().partition(" ")
        by_name.setdefault(name, set()).update(c for c in rest.strip().split(",") if c)
    return tuple(sorted((name, tuple(sorted(c))) for name, c in by_name.items()))


def conda_core(p: LockedCondaPackage) -> tuple[object, ...]:
    return (p.name, p.version, p.build, p.subdir, p.channel, p.url, p.md5, p.sha256, depends_meaning(p.depends))


def pip_core(p: LockedPipPackage) -> tuple[object, ...]:
    return (p.normalized_name, p.version, p.url, p.sha256)


def core(lock: EnvironmentLock, *, depends: bool = True) -> dict[str, tuple[set[tuple[object, ...]], ...]]:
    """What every format must keep: per platform the conda and pip package identities and hashes."""
    cut = None if depends else -1
    return {
        name: ({conda_core(p)[:cut] for p in pl.conda}, {pip_core(p) for p in pl.pip})
        for name, pl in lock.platforms.items()
    }


def _is_local(p: PypiLockedPackage) -> bool:
    return "://" not in p.location or p.location.startswith("file:")


def _rattler_default(path: Path) -> dict[str, tuple[set[str], set[str], int]]:
    """Per platform: binary conda URLs, PyPI URLs, number of source and local PyPI packages - straight from rattler."""
    env = LockFile.from_path(path.resolve()).environment("default")
    assert env is not None
    out = {}
    for platform in env.platforms():
        pkgs = env.packages(platform) or []
        out[platform.name] = (
            {p.location for p in pkgs if isinstance(p, CondaLockedBinaryPackage)},
            {p.location for p in pkgs if isinstance(p, PypiLockedPackage) and not _is_local(p)},
            sum(isinstance(p, CondaLockedSourcePackage) or (isinstance(p, PypiLockedPackage) and _is_local(p))
                for p in pkgs),
        )
    return out


def _run_conda_lock_render(lock_path: Path, platform: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "conda_lock", "render", "--kind", "explicit", "--platform", platform, str(lock_path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return (cwd / f"conda-{platform}.lock").read_text()


# --- importing real lockfiles -------------------------------------------------------------


@pytest.mark.parametrize("path", [*CONDA_LOCK_FILES, LEGACY_PIXI], ids=_ids([*CONDA_LOCK_FILES, LEGACY_PIXI]))
def test_conda_lock_files_import_with_every_package(path: Path) -> None:
    lock = read_lockfile(path)
    totals = _expected_totals(path)
    assert sum(len(pl.conda) for pl in lock.platforms.values()) == totals["conda"]
    assert sum(len(pl.pip) for pl in lock.platforms.values()) == totals["pip"]
    doc = yaml.safe_load(path.read_text())
    assert set(lock.platform_names) == set(doc["metadata"]["platforms"])
    for pl in lock.platforms.values():
        for pkg in pl.conda:
            assert pkg.md5 and pkg.url.endswith(pkg.file_name)
            assert pkg.file_name.startswith(f"{pkg.name}-{pkg.version}-{pkg.build}.")
            assert pkg.url == f"{pkg.channel}/{pkg.subdir}/{pkg.file_name}"
            assert pkg.subdir in ("noarch", pl.platform)


def test_known_package_from_pangeo_conda_lock() -> None:
    lock = read_lockfile(PANGEO_ML)
    mutex = lock.platforms["linux-64"].conda_by_name()["_libgcc_mutex"]
    assert (mutex.version, mutex.build, mutex.build_number, mutex.subdir) == ("0.1", "conda_forge", 0, "linux-64")
    assert mutex.channel == "https://conda.anaconda.org/conda-forge"
    assert mutex.md5 == "d7c89558ba9fa0495403155b64376d81"
    assert mutex.sha256 == "fe51de6107f9edc7aa4f786a70f4a883943bc9d39b3bb7307c04c41410990726"
    assert lock.content_hash == {"linux-64": "b167af54f0e99dd3c504859a7d65a9fddd87b0a2c583347088e94abd07e7a3e7"}
    assert lock.channels == ("conda-forge",)
    assert lock.sources == ("environment.yml", "../pangeo-notebook/environment.yml", "../base-notebook/environment.yml")


def test_pip_packages_and_categories_from_conda_lock_v2_5_8() -> None:
    lock = read_lockfile(WITH_PIP)
    linux = lock.platforms["linux-64"]
    anyio = next(p for p in linux.pip if p.name == "anyio")
    assert anyio.version == "4.9.0"
    assert anyio.sha256 == "9f76d541cad6e36af7beb62e978876f3b41e3e04f2c1fbf0884604c0a9c4d93c"
    assert set(anyio.requires_dist) == {"idna >=2.8", "sniffio >=1.1"}
    requests = next(p for p in linux.pip if p.name == "requests")  # a git requirement: the commit is in the URL
    assert requests.url.startswith("git+https://github.com/requests/requests.git@") and requests.sha256 is None
    # 'test' and 'dev' category packages are read too, each once
    assert len({p.name for p in linux.pip}) == len(linux.pip) == 15


@pytest.mark.parametrize("path", CONDA_LOCK_FIXTURE_FILES, ids=[p.parent.name for p in CONDA_LOCK_FIXTURE_FILES])
def test_conda_lock_fixtures_agree_with_conda_lock_parser(path: Path) -> None:
    from conda_lock.lockfile import parse_conda_lock_file

    theirs = parse_conda_lock_file(path)
    expected: dict[str, set[tuple[str, str, str, str | None]]] = {}
    for dep in theirs.package:
        if not dep.name.startswith("__"):
            expected.setdefault(dep.platform, set()).add((dep.manager, dep.name, dep.url, dep.hash.sha256))
    lock = read_lockfile(path)
    got = {
        name: {("conda", p.name, p.url, p.sha256) for p in pl.conda}
        | {("pip", p.name, p.url, p.sha256) for p in pl.pip}
        for name, pl in lock.platforms.items()
        if pl.conda or pl.pip
    }
    assert got == expected


@pytest.mark.parametrize("path", EXPLICIT_FILES, ids=_ids(EXPLICIT_FILES))
def test_explicit_files_import(path: Path) -> None:
    text = path.read_text()
    lock = read_lockfile(path)
    assert lock.platform_names == ("linux-64",)
    pl = lock.platforms["linux-64"]
    assert len(pl.conda) == _expected_totals(path)["conda"]
    urls = [line.split("#")[0] for line in text.splitlines() if line.startswith("https://")]
    assert {p.url for p in pl.conda} == set(urls)
    header_hash = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("# input_hash"))
    assert lock.content_hash == {"linux-64": header_hash}
    assert lock.channels == ("https://conda.anaconda.org/conda-forge",)


def test_known_package_from_explicit_file() -> None:
    lock = read_lockfile(
        LOCKS / "explicit" / "conda__conda-libmamba-solver__tests_data_pangeo_ml_notebook.linux-64.lock"
    )
    python = lock.platforms["linux-64"].conda_by_name()["python"]
    assert (python.version, python.build, python.build_number) == ("3.9.10", "h85951f9_2_cpython", 2)
    assert python.md5 == "eb70cef531c241272a35010ea8a4f705" and python.sha256 is None


@pytest.mark.parametrize("path", PIXI_FILES, ids=_ids(PIXI_FILES))
def test_pixi_files_import_like_rattler_reads_them(path: Path) -> None:
    expected = {name: found for name, found in _rattler_default(path).items() if found[0] or found[1]}
    warnings: list[str] = []
    lock = read_lockfile(path, warn=warnings.append)
    # source and local (editable) packages are skipped, one warning line each naming them
    assert bool(warnings) == any(sources for _, _, sources in expected.values())
    assert all("skipped" in w and "cannot be locked as an artifact" in w and "\n" not in w for w in warnings)
    if warnings:
        with pytest.raises(LockfileError, match="package") as err:
            parse_pixi_lock(path, skip_source=False)
        assert err.value.file == str(path) and err.value.hint
    assert set(lock.platforms) == set(expected)
    for name, (conda_urls, pypi_locations, _) in expected.items():
        pl = lock.platforms[name]
        assert {p.url for p in pl.conda} == conda_urls
        assert len(pl.pip) == len(pypi_locations)
        assert all(p.md5 or p.sha256 for p in pl.conda)


def test_pixi_named_environments_and_known_packages() -> None:
    lock = read_lockfile(JUPYTERLAB_PIXI)
    assert {n: len(pl.conda) for n, pl in lock.platforms.items()} == {
        "linux-64": 256,
        "osx-64": 190,
        "osx-arm64": 191,
        "win-64": 212,
    }
    dev = parse_pixi_lock(CONDA_LOCK_PIXI, environment="minimal")
    assert dev.name == "minimal" and len(dev.platforms["linux-64"].conda) == 98
    ty = next(p for p in parse_pixi_lock(CONDA_LOCK_PIXI).platforms["linux-64"].pip if p.name == "ty")
    assert ty.version == "0.0.1a21" and ty.sha256 and len(ty.sha256) == 64
    assert ty.url.endswith("ty-0.0.1a21-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    with pytest.raises(LockfileError, match="no environment 'nope'") as err:
        parse_pixi_lock(CONDA_LOCK_PIXI, environment="nope")
    assert "minimal" in (err.value.hint or "")
    ros = parse_pixi_lock(ROS_PIXI)
    assert {n: len(pl.conda) for n, pl in ros.platforms.items()} == {"linux-64": 201, "osx-arm64": 192, "win-64": 190}


@pytest.mark.parametrize(
    "path", RATTLER_FIXTURE_FILES, ids=[str(p.relative_to(RATTLER_FIXTURES)) for p in RATTLER_FIXTURE_FILES]
)
def test_rattler_lock_fixtures(path: Path) -> None:
    """Every rattler fixture is read like rattler reads it, or refused with a clean error naming it."""
    try:
        expected = _rattler_default(path)
    except Exception:  # rattler cannot read it (a future version) or it has no 'default' environment
        with pytest.raises(LockfileError) as err:
            read_lockfile(path)
        assert err.value.file == str(path) and err.value.hint and str(path) in err.value.one_line()
        return
    warnings: list[str] = []
    lock = read_lockfile(path, warn=warnings.append)
    assert len(warnings) <= sum(sources for _, _, sources in expected.values())
    assert bool(warnings) == any(sources for _, _, sources in expected.values())
    got = {n: ({p.url for p in pl.conda}, len(pl.pip)) for n, pl in lock.platforms.items() if pl.conda or pl.pip}
    assert got == {n: (urls, len(pypi)) for n, (urls, pypi, _) in expected.items() if urls or pypi}


def test_rattler_fixture_known_content() -> None:
    lock = read_lockfile(RATTLER_FIXTURES / "v5" / "flat-index-lock.yml")
    bzip2 = lock.platforms["osx-arm64"].conda_by_name()["bzip2"]
    assert (bzip2.version, bzip2.build, bzip2.build_number) == ("1.0.8", "h93a5062_5", 5)
    assert bzip2.sha256 == "bfa84296a638bea78a8bb29abc493ee95f2a0218775642474a840411b950fe5f"
    assert bzip2.md5 == "1bbc659ca658bfd49a481b5ef7a0f40f" and bzip2.license == "bzip2-1.0.6"
    legacy_v3 = read_lockfile(RATTLER_FIXTURES / "v3" / "robostack-turtlesim-conda-lock.yml")  # read by our parser
    assert {n: len(pl.conda) for n, pl in legacy_v3.platforms.items()} == {
        "linux-64": 593,
        "osx-64": 543,
        "osx-arm64": 544,
        "win-64": 517,
    }


# --- round trips --------------------------------------------------------------------------

ROUND_TRIP_SOURCES = [
    PANGEO_ML,
    WITH_PIP,
    JUPYTERLAB_PIXI,
    EXPLICIT_FILES[1],
    RATTLER_FIXTURES / "v5" / "flat-index-lock.yml",
]


@pytest.mark.parametrize("path", ROUND_TRIP_SOURCES, ids=_ids(ROUND_TRIP_SOURCES))
def test_conda_lock_round_trip_through_conda_locks_parser(path: Path, tmp_path: Path) -> None:
    from conda_lock.lockfile import parse_conda_lock_file

    lock = read_lockfile(path)
    out = tmp_path / "conda-lock.yml"
    out.write_text(render_conda_lock(lock))
    theirs = parse_conda_lock_file(out)
    got: dict[str, set[tuple[object, ...]]] = {}
    for dep in theirs.package:
        vcs = dep.url.startswith("git+")  # conda-lock's "sha256" of a VCS requirement is its commit, in the URL
        got.setdefault(dep.platform, set()).add(
            (dep.manager, dep.name, dep.version, dep.url, dep.hash.md5, None if vcs else dep.hash.sha256)
        )
    want = {
        name: {("conda", p.name, p.version, p.url, p.md5, p.sha256) for p in pl.conda}
        | {("pip", p.name, p.version, p.url, None, p.sha256) for p in pl.pip}
        for name, pl in lock.platforms.items()
    }
    assert got == want
    assert core(parse_conda_lock(out.read_text(), source=out)) == core(lock)


@pytest.mark.parametrize(
    ("path", "platform"),
    [
        (PANGEO_ML, "linux-64"),
        (WITH_PIP, "linux-64"),
        (JUPYTERLAB_PIXI, "osx-arm64"),
        (CONDA_LOCK_FIXTURES / "test-explicit-toposorted" / "conda-lock.yml", "linux-64"),
    ],
    ids=["pangeo", "with-pip", "pixi-import", "toposorted"],
)
def test_conda_lock_cli_renders_our_lock_like_we_do(path: Path, platform: str, tmp_path: Path) -> None:
    lock = read_lockfile(path)
    ours = render_explicit(lock, platform)
    (tmp_path / "conda-lock.yml").write_text(render_conda_lock(lock))
    theirs = _run_conda_lock_render(tmp_path / "conda-lock.yml", platform, tmp_path)
    # Same header fields, same URLs with the same hashes, in the same (toposorted) order; only the generator differs.
    assert ours.splitlines()[1:] == [
        line for line in theirs.splitlines()[1:] if not (line == "# input_hash:" and platform not in lock.content_hash)
    ]
    urls = [line for line in ours.splitlines() if line.startswith("https://")]
    assert len(urls) == len(rendered(lock.platforms[platform].conda))
    position = {line.split("#")[0].rsplit("/", 1)[1].rsplit("-", 2)[0]: i for i, line in enumerate(urls)}
    for pkg in rendered(lock.platforms[platform].conda):  # dependencies before dependents (except cycles conda breaks)
        late = [d for d in pkg.depends if position.get(d.split()[0], -1) > position[pkg.name]]
        assert not late or pkg.name in ("python", "pip") or all(d.split()[0] in ("python", "pip") for d in late)


@pytest.mark.parametrize("path", ROUND_TRIP_SOURCES, ids=_ids(ROUND_TRIP_SOURCES))
def test_pixi_round_trip_through_rattler(path: Path, tmp_path: Path) -> None:
    lock = read_lockfile(path)
    out = tmp_path / "pixi.lock"
    write_pixi_lock(lock, out)
    env = LockFile.from_path(out).default_environment()
    assert env is not None
    for name, pl in lock.platforms.items():
        records = env.conda_repodata_records_for_platform(next(p for p in env.platforms() if p.name == name)) or []
        assert {(r.url, r.sha256.hex() if r.sha256 else None, r.md5.hex() if r.md5 else None) for r in records} == {
            (p.url, p.sha256, p.md5) for p in pl.conda
        }
    back = parse_pixi_lock(out)
    assert core(back, depends=False) == core(lock, depends=False)

    def record_fields(lk: EnvironmentLock) -> set[tuple[object, ...]]:
        return {
            (p.url, p.build_number, p.timestamp, p.size, p.noarch, p.license, p.constrains, p.track_features)
            for pl in lk.platforms.values()
            for p in pl.conda
        }

    assert record_fields(back) == record_fields(lock)  # timestamps to the millisecond, from the lock only
    # pixi.lock holds one record per file; where the source agrees with itself, dependencies survive too
    depends_by_url: dict[str, set[object]] = {}
    for pl in lock.platforms.values():
        for p in pl.conda:
            depends_by_url.setdefault(p.url, set()).add(depends_meaning(p.depends))
    for pl in back.platforms.values():
        for p in pl.conda:
            assert depends_meaning(p.depends) in depends_by_url[p.url]
            if len(depends_by_url[p.url]) == 1:
                assert {depends_meaning(p.depends)} == depends_by_url[p.url]
    # rattler keeps the sha256 in the location's #sha256= fragment; we read it back as the hash
    assert {p.sha256 for pl in back.platforms.values() for p in pl.pip} == {
        p.sha256 for pl in lock.platforms.values() for p in pl.pip
    }


@pytest.mark.parametrize("path", ROUND_TRIP_SOURCES, ids=_ids(ROUND_TRIP_SOURCES))
def test_explicit_round_trip(path: Path) -> None:
    lock = read_lockfile(path)
    for platform in lock.platform_names:
        back = parse_explicit(render_explicit(lock, platform), source=f"conda-{platform}.lock")
        assert back.platform_names == (platform,)
        # @EXPLICIT lines carry one hash: the md5 (what every conda accepts), else the sha256
        assert {
            conda_core(p)[:-2] + (p.sha256 if p.md5 is None else None,) for p in back.platforms[platform].conda
        } == {
            conda_core(p)[:-2] + (p.sha256 if p.md5 is None else None,)
            for p in rendered(lock.platforms[platform].conda)
        }
        assert render_explicit(back, platform).splitlines()[1:3] == render_explicit(lock, platform).splitlines()[1:3]
        assert {(p.normalized_name, p.url, p.sha256) for p in back.platforms[platform].pip} == {
            (p.normalized_name, p.url, p.sha256) for p in rendered(lock.platforms[platform].pip)
        }


def test_name_and_requested_specs_survive_conda_lock_yml(tmp_path: Path) -> None:
    from conda_lock.lockfile import parse_conda_lock_file

    lock = replace(
        read_lockfile(WITH_PIP),
        name="ci env",
        requested={"linux-64": ("python >=3.12", 'it\'s "quoted"'), "win-64": ("numpy 1.26.*",)},
        requested_pip={"linux-64": ("requests[socks] ; python_version >= '3.8'",)},
    )
    path = tmp_path / "conda-lock.yml"
    path.write_text(render_conda_lock(lock))
    back = read_lockfile(path)
    assert (back.name, back.requested, back.requested_pip) == (lock.name, lock.requested, lock.requested_pip)
    custom = parse_conda_lock_file(path).metadata.custom_metadata  # a field conda-lock itself knows
    assert custom is not None and custom["envyard.name"] == "ci env"
    path.write_text(path.read_text().replace("envyard.requested.win-64: '[", "envyard.requested.win-64: '{"))
    with pytest.raises(LockfileError, match="custom_metadata") as err:
        read_lockfile(path)
    assert path.read_text().splitlines()[err.value.line - 1].startswith("    envyard.requested.win-64:")  # type: ignore[operator]


def test_write_lock_files_writes_every_format_and_reads_back(tmp_path: Path) -> None:
    lock = read_lockfile(LOCKS / "conda-lock" / "pangeo-data__pangeo-docker-images__base-notebook_conda-lock.yml")
    written = write_lock_files(lock, tmp_path / "out")
    assert sorted(written) == sorted(
        [
            "conda-lock.yml",
            "pixi.lock",
            *(f"conda-{p}.lock" for p in ("linux-64", "linux-aarch64", "osx-64", "osx-arm64")),
        ]
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(written)  # no temporary files left
    assert core(read_lockfile(written["conda-lock.yml"])) == core(lock)
    assert core(read_lockfile(written["pixi.lock"]), depends=False) == core(lock, depends=False)
    for platform in lock.platform_names:
        explicit = read_lockfile(written[f"conda-{platform}.lock"]).platforms[platform]
        assert {(p.url, p.md5) for p in explicit.conda} == {(p.url, p.md5) for p in lock.platforms[platform].conda}
    only = write_lock_files(lock, tmp_path / "only", formats=("explicit",))
    assert set(only) == {f"conda-{p}.lock" for p in lock.platform_names}


# --- determinism --------------------------------------------------------------------------


def _shuffled(lock: EnvironmentLock, seed: int) -> EnvironmentLock:
    rng = random.Random(seed)
    platforms = list(lock.platforms.items())
    rng.shuffle(platforms)
    out = {}
    for name, pl in platforms:
        conda, pip = list(pl.conda), list(pl.pip)
        rng.shuffle(conda)
        rng.shuffle(pip)
        out[name] = replace(pl, conda=tuple(conda), pip=tuple(pip))
    return replace(lock, platforms=out)


def test_renders_are_byte_deterministic_whatever_the_order(tmp_path: Path) -> None:
    lock = read_lockfile(WITH_PIP)
    shuffled = _shuffled(lock, 7)
    assert render_conda_lock(lock) == render_conda_lock(shuffled)
    for platform in lock.platform_names:
        assert render_explicit(lock, platform) == render_explicit(shuffled, platform)
    write_pixi_lock(lock, tmp_path / "a.lock")
    write_pixi_lock(shuffled, tmp_path / "b.lock")
    assert (tmp_path / "a.lock").read_bytes() == (tmp_path / "b.lock").read_bytes()


_WRITE_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from envyard.builder.lockfiles import read_lockfile, write_lock_files
    write_lock_files(read_lockfile(Path(sys.argv[1])), Path(sys.argv[2]))
    """
)


def test_written_files_do_not_depend_on_process_cwd_or_mtimes(tmp_path: Path) -> None:
    source_a, source_b = tmp_path / "a.yml", tmp_path / "b.yml"
    shutil.copyfile(WITH_PIP, source_a)
    shutil.copyfile(WITH_PIP, source_b)
    os.utime(source_a, (1_000_000_000, 1_000_000_000))
    (tmp_path / "cwd").mkdir()
    write_lock_files(read_lockfile(source_a), tmp_path / "in-process")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO_ROOT), "TZ": "Pacific/Kiritimati"}
    subprocess.run(
        [sys.executable, "-c", _WRITE_SCRIPT, str(source_b), str(tmp_path / "subprocess")],
        cwd=tmp_path / "cwd",
        env=env,
        check=True,
        timeout=120,
    )
    first = {p.name: p.read_bytes() for p in (tmp_path / "in-process").iterdir()}
    second = {p.name: p.read_bytes() for p in (tmp_path / "subprocess").iterdir()}
    assert len(first) == 8 and first == second


# --- YAML scalars -------------------------------------------------------------------------

TRICKY = [
    "1.10", "3.0", "2024a", "*", ">=1.2", "<2", "==6.3.0", "!=1", "~=1.0", "^1.0", "3.12.* *_cp312", "true", "False",
    "null", "~", "", "yes", "no", "on", "off", "y", "n", "2022-01-01", "2022.07.19", "1:20", "0x1F", "0o17", "0b101",
    "1_000", "07", "1e3", "+1", "-1", ".5", ".inf", "-.inf", ".nan", "=", "<<", "-", "- x", "-x", "a: b", "a:b", "x:",
    ":x", "?x", "? x", "a #b", "a#b", "#x", "@x", "`x", "!x", "&x", "%x", "|", ">", "[a]", "{a}", "a,b", "'q'", '"q"',
    "it's", "trailing ", " leading", "---", "...", "--- x", "ünïcode", "tab\there", "new\nline", "😀", "back\\slash",
    "https://conda.anaconda.org/conda-forge/noarch/x-1.0-py_0.conda", "git+https://h/r.git@abc", "${TOKEN}",
]  # fmt: skip


@pytest.mark.parametrize("text", TRICKY)
def test_yaml_scalar_reads_back_as_the_same_string(text: str) -> None:
    scalar = yaml_scalar(text)
    assert yaml.safe_load(f"key: {scalar}\n") == {"key": text}
    assert yaml.safe_load(f"{scalar}: value\n") == {text: "value"}
    assert yaml.safe_load(f"- {scalar}\n") == [text]
    assert "\n" not in scalar


@pytest.mark.parametrize("path", [PANGEO_ML, WITH_PIP, JUPYTERLAB_PIXI], ids=["pangeo", "with-pip", "pixi"])
def test_conda_lock_text_is_what_pyyaml_would_write(path: Path) -> None:
    """Quoting and layout match PyYAML's own dump of the same document, byte for byte."""
    ours = render_conda_lock(read_lockfile(path))
    body = "".join(line for line in ours.splitlines(keepends=True) if not line.startswith("#"))
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    assert yaml.dump(yaml.safe_load(ours), Dumper=dumper, sort_keys=False, width=1 << 30) == body


def test_toposort_matches_condas_rules() -> None:
    graph = {
        "c": {"b", "__glibc"},
        "b": {"a"},
        "a": set(),
        "x": {"y"},
        "y": {"x", "a"},
        "python": {"pip"},
        "pip": {"python"},
    }
    order = toposort_names(graph)
    assert order.index("a") < order.index("b") < order.index("c")
    assert order.index("python") < order.index("pip")  # conda's python/pip special case
    assert set(order) == set(graph) | {"__glibc"} and order.index("x") < order.index("y")


# --- bad input ----------------------------------------------------------------------------


def _copy_with(tmp_path: Path, source: Path, edit: Callable[[str], str], name: str = "conda-lock.yml") -> Path:
    path = tmp_path / name
    path.write_text(edit(source.read_text()))
    return path


def test_truncated_yaml_names_file_and_line(tmp_path: Path) -> None:
    text = PANGEO_ML.read_text()
    cut = text.index("version: '0.1'") + len("version: '0.")
    path = tmp_path / "conda-lock.yml"
    path.write_text(text[:cut])
    with pytest.raises(LockfileError) as err:
        read_lockfile(path)
    assert err.value.file == str(path)
    assert err.value.line == text[:cut].count("\n") + 1
    assert err.value.hint and "YAML" in err.value.message
    assert f"{path}:{err.value.line}:" in err.value.one_line()


def test_truncated_pixi_lock_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "pixi.lock"
    path.write_text(JUPYTERLAB_PIXI.read_text()[:40_000])
    with pytest.raises(LockfileError) as err:
        read_lockfile(path)
    assert err.value.file == str(path) and err.value.hint


@pytest.mark.parametrize("version", ["99", "'1'", "true"])
def test_unsupported_conda_lock_version(tmp_path: Path, version: str) -> None:
    path = _copy_with(tmp_path, PANGEO_ML, lambda t: t.replace("\nversion: 1\n", f"\nversion: {version}\n"))
    with pytest.raises(LockfileError, match="unsupported conda-lock lockfile version") as err:
        read_lockfile(path)
    assert err.value.line == path.read_text().splitlines().index(f"version: {version}") + 1
    assert err.value.field == "version" and "1, 2, 3" in (err.value.hint or "")


def test_future_pixi_version_is_refused(tmp_path: Path) -> None:
    path = _copy_with(tmp_path, JUPYTERLAB_PIXI, lambda t: t.replace("version: 6\n", "version: 99\n", 1), "pixi.lock")
    with pytest.raises(LockfileError, match="99") as err:
        read_lockfile(path)
    assert err.value.file == str(path)


def test_missing_hash_points_at_the_package(tmp_path: Path) -> None:
    def drop_first_hash(text: str) -> str:
        lines = text.splitlines(keepends=True)
        start = next(i for i, line in enumerate(lines) if line == "  hash:\n")
        return "".join(lines[:start] + lines[start + 3 :])

    path = _copy_with(tmp_path, PANGEO_ML, drop_first_hash)
    with pytest.raises(LockfileError, match="'hash' is missing") as err:
        read_lockfile(path)
    assert err.value.field == "package[0].hash"
    assert path.read_text().splitlines()[err.value.line - 1] == "- name: _libgcc_mutex"  # type: ignore[operator]


def test_unquoted_float_version_is_refused(tmp_path: Path) -> None:
    path = _copy_with(tmp_path, PANGEO_ML, lambda t: t.replace("version: '0.1'", "version: 0.10", 1))
    with pytest.raises(LockfileError, match="'version' is not a string") as err:
        read_lockfile(path)
    assert path.read_text().splitlines()[err.value.line - 1] == "  version: 0.10"  # type: ignore[operator]
    assert "quote" in (err.value.hint or "")


def test_explicit_line_that_is_not_a_url(tmp_path: Path) -> None:
    source = EXPLICIT_FILES[1]
    lines = source.read_text().splitlines(keepends=True)
    at = lines.index("@EXPLICIT\n") + 3
    path = tmp_path / "conda-linux-64.lock"
    path.write_text("".join([*lines[:at], "numpy=1.26.4=py312h_0\n", *lines[at:]]))
    with pytest.raises(LockfileError, match="not a package URL") as err:
        read_lockfile(path)
    assert (err.value.file, err.value.line) == (str(path), at + 1)
    assert "@EXPLICIT" in (err.value.hint or "")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"just: [a, mapping]\n", "neither"),
        (b"# platform: linux-64\nhttps://x.org/c/linux-64/a-1-0.conda\n", "neither"),
        (b"@EXPLICIT\nhttps://x.org/c/linux-64/a-1-0.conda#nothex\n", "not a package URL"),
        (b"@EXPLICIT\nhttps://x.org/c/linux-64/a-1-0.conda\nhttps://x.org/c/osx-64/b-1-0.conda\n", "platform"),
        (b"version: 1\nmetadata: {platforms: [linux-64]}\npackage:\n- name: a\n", "'version' is missing"),
        (b"version: 1\nmetadata: []\npackage: []\n", "'metadata'"),
    ],
)
def test_unreadable_content_is_a_lockfile_error(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "some.lock"
    path.write_bytes(content)
    with pytest.raises(LockfileError, match=match) as err:
        read_lockfile(path)
    assert err.value.file == str(path) and err.value.hint


def test_missing_file_is_a_lockfile_error(tmp_path: Path) -> None:
    with pytest.raises(LockfileError, match="cannot read") as err:
        read_lockfile(tmp_path / "nope.yml")
    assert err.value.file == str(tmp_path / "nope.yml")


def test_lock_a_format_cannot_hold_leaves_the_directory_untouched(tmp_path: Path) -> None:
    lock = read_lockfile(PANGEO_ML)
    written = write_lock_files(lock, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    no_md5 = replace(lock.platforms["linux-64"].conda[0], md5=None)
    broken = replace(
        lock,
        platforms={
            "linux-64": replace(lock.platforms["linux-64"], conda=(no_md5, *lock.platforms["linux-64"].conda[1:]))
        },
    )
    with pytest.raises(LockfileError, match="no md5") as err:
        write_lock_files(broken, tmp_path)
    assert "pixi.lock" in (err.value.hint or "")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before and len(before) == len(written)
    # pixi.lock and @EXPLICIT can carry it (sha256 only)
    assert "#sha256:" in render_explicit(broken, "linux-64")
    write_pixi_lock(broken, tmp_path / "only-sha.lock")
    assert parse_pixi_lock(tmp_path / "only-sha.lock").platforms["linux-64"].conda_by_name()[no_md5.name].md5 is None


def test_pip_package_without_fixed_version_cannot_go_to_pixi(tmp_path: Path) -> None:
    lock = read_lockfile(CONDA_LOCK_PIXI)  # its editable '<dynamic>' conda-lock itself is skipped on reading
    assert "conda-lock" not in {p.name for pl in lock.platforms.values() for p in pl.pip}
    pl = lock.platforms["linux-64"]
    dynamic = replace(pl.pip[0], name="conda-lock", version="<dynamic>")
    broken = replace(lock, platforms={**lock.platforms, "linux-64": replace(pl, pip=(*pl.pip, dynamic))})
    with pytest.raises(LockfileError, match="conda-lock '<dynamic>'") as err:
        write_pixi_lock(broken, tmp_path / "pixi.lock")
    assert err.value.file == str(tmp_path / "pixi.lock") and "PEP 440" in (err.value.hint or "")
    assert "name: conda-lock" in render_conda_lock(broken)  # conda-lock.yml has no such restriction
    out = tmp_path / "new" / "out"
    with pytest.raises(LockfileError, match="<dynamic>") as err:
        write_lock_files(broken, out)
    assert err.value.file == str(out / "pixi.lock") and ".tmp" not in err.value.one_line()
    assert "staging" not in err.value.one_line()
    assert not (tmp_path / "new").exists()  # a failed write creates no directory


def test_unknown_format_and_platform_are_refused(tmp_path: Path) -> None:
    lock = EnvironmentLock(platforms={"linux-64": PlatformLock("linux-64")})
    with pytest.raises(LockfileError, match="unknown lock format"):
        write_lock_files(lock, tmp_path, formats=("poetry",))  # type: ignore[arg-type]
    with pytest.raises(LockfileError, match="no platform 'win-64'"):
        render_explicit(lock, "win-64")
