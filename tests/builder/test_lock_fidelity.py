"""Lossless import and re-export: every lock of every kind round-trips to an equal model; what a format
cannot hold is reported; ``lock diff`` and ``why`` see what the lock says (categories, dependencies, paths)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rattler import LockFile

from envyard.builder.errors import LockfileError
from envyard.builder.lockdiff import diff_locks
from envyard.builder.lockfiles import (
    parse_conda_lock,
    parse_explicit,
    parse_pixi_environments,
    read_lock_environments,
    read_lockfile,
    render_conda_lock,
    render_explicit,
    render_pixi_lock,
    write_lock_files,
    write_pixi_lock,
)
from envyard.builder.lockfiles._common import build_number_of
from envyard.builder.model import (
    MAIN_CATEGORY,
    EnvironmentLock,
    LockedCondaPackage,
    LockedPipPackage,
    PackageCategory,
    PlatformLock,
    normalize_pypi_name,
)
from envyard.builder.why import NoDependencyDataError, NoDependencyPathError, why, why_all

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT.parent / "shared" / "data"
LOCKS = DATA / "locks"
FIXTURES = DATA / "fixtures"
if not LOCKS.is_dir():
    pytest.skip(f"shared data not found at {DATA} (it sits beside the checkout as ../shared)", allow_module_level=True)


def _kind(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    if any(line.strip() == "@EXPLICIT" for line in text.splitlines()):
        return "explicit"
    try:
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict):
        return None
    if "environments" in doc:
        return "pixi"
    if "package" in doc and "metadata" in doc:
        return "conda-lock"
    return None


ALL_FILES = sorted(p for root in (LOCKS, FIXTURES) for p in root.rglob("*") if p.is_file())
BY_KIND: dict[str, list[Path]] = {}
for _path in ALL_FILES:
    _k = _kind(_path)
    if _k is not None:
        BY_KIND.setdefault(_k, []).append(_path)
CONDA_LOCK_FILES = BY_KIND["conda-lock"]
PIXI_FILES = BY_KIND["pixi"]
EXPLICIT_FILES = BY_KIND["explicit"]
WITH_PIP = LOCKS / "conda-lock" / "conda__conda-lock__tests_test-v2-to-v3-upgrade_conda-lock-v2.5.8.yml"
MULTI_CATEGORIES = FIXTURES / "conda-lock" / "tests" / "test-multiple-categories" / "conda-lock.yml"
CONDA_LOCK_PIXI = LOCKS / "pixi" / "conda__conda-lock__pixi.lock"
PY_RATTLER_PIXI = LOCKS / "pixi" / "conda__rattler__py-rattler_pixi.lock"
PANGEO_EXPLICIT = LOCKS / "explicit" / "conda__conda-libmamba-solver__tests_data_pangeo_ml_notebook.linux-64.lock"
ROS_PIXI = LOCKS / "pixi" / "prefix-dev__pixi__docs_source_files_pixi_workspaces_pixi_build_ros_ws_pixi.lock"


def _ids(paths: Iterable[Path]) -> list[str]:
    return [str(p.relative_to(DATA))[-70:] for p in paths]


def test_every_kind_of_lock_is_found() -> None:
    assert len(CONDA_LOCK_FILES) >= 20 and len(PIXI_FILES) >= 40 and len(EXPLICIT_FILES) >= 6


# --- parse -> write -> parse, over every file ---------------------------------------------

# conda records carry fields conda-lock.yml has no place for (rattler's legacy v3 files hold them)
_RECORD_ONLY = {"size": None, "timestamp": None, "license": None, "constrains": (), "noarch": None,
                "track_features": ()}  # fmt: skip


def _without_record_details(lock: EnvironmentLock) -> EnvironmentLock:
    def strip(p: LockedCondaPackage) -> LockedCondaPackage:
        return replace(p, build_number=build_number_of(p.build), **_RECORD_ONLY)  # type: ignore[arg-type]

    return replace(
        lock,
        platforms={n: replace(pl, conda=tuple(strip(p) for p in pl.conda)) for n, pl in lock.platforms.items()},
    )


@pytest.mark.parametrize("path", CONDA_LOCK_FILES, ids=_ids(CONDA_LOCK_FILES))
def test_conda_lock_round_trip_gives_an_equal_model(path: Path, tmp_path: Path) -> None:
    from conda_lock.lockfile import parse_conda_lock_file

    try:
        lock = read_lockfile(path)
    except LockfileError as err:  # a version from the future: refused, naming the file
        assert err.file == str(path) and "version" in err.message
        return
    out = tmp_path / "conda-lock.yml"
    out.write_text(render_conda_lock(lock))
    back = read_lockfile(out)
    doc = yaml.safe_load(path.read_text())
    legacy = any("size" in e or "timestamp" in e for e in doc["package"])
    if legacy:  # rattler's legacy records: v1 holds less
        assert {n: {p.url for p in pl.conda} for n, pl in back.platforms.items()} == {
            n: {p.url for p in pl.conda} for n, pl in lock.platforms.items()
        }
        assert parse_conda_lock(render_conda_lock(back), source="again") == back
    else:
        assert back == lock
    assert render_conda_lock(back) == out.read_text()

    # conda-lock itself reads the same packages, categories, dependency maps, hashes and sources from both
    def seen(file: Path) -> list[tuple[object, ...]]:
        return sorted(
            (d.platform, d.manager, d.name, d.version, d.url, d.hash.md5, d.hash.sha256, tuple(sorted(d.categories)),
             tuple(sorted(d.dependencies.items())), d.source and d.source.url)
            for d in parse_conda_lock_file(file).package
            if not d.name.startswith("__")
        )  # fmt: skip

    if not legacy:  # (conda-lock refuses rattler's extra fields)
        assert seen(out) == seen(path)


def _pixi_environments(path: Path) -> dict[str, EnvironmentLock] | None:
    try:
        LockFile.from_path(path.resolve())
    except Exception:  # a version rattler 0.28 cannot read: refused cleanly elsewhere
        with pytest.raises(LockfileError):
            read_lock_environments(path)
        return None
    return read_lock_environments(path)


def _depends_as_sets(envs: dict[str, EnvironmentLock]) -> dict[str, EnvironmentLock]:
    """pixi.lock holds one record per file: a legacy file that repeats a noarch record per platform, with
    its depends in another order each time, keeps one order."""
    return {
        name: replace(
            lock,
            platforms={
                n: replace(pl, conda=tuple(replace(p, depends=tuple(sorted(p.depends))) for p in pl.conda))
                for n, pl in lock.platforms.items()
            },
        )
        for name, lock in envs.items()
    }


@pytest.mark.parametrize("path", PIXI_FILES, ids=_ids(PIXI_FILES))
def test_pixi_round_trip_gives_equal_models_for_every_environment(path: Path, tmp_path: Path) -> None:
    envs = _pixi_environments(path)
    if envs is None:
        return
    first = next(iter(envs.values()))
    out = tmp_path / "pixi.lock"
    try:
        write_pixi_lock(first, out, environments=envs)
    except LockfileError as err:  # rattler refuses to write a record it read (a made-up subdir in a fixture)
        assert "valid subdir" in err.message and err.file == str(out)
        return
    back = parse_pixi_environments(out)  # rattler reads our output
    if "legacy" in path.name:
        assert _depends_as_sets(back) == _depends_as_sets(envs)
    else:
        assert back == envs
    assert render_pixi_lock(first, environments=back) == out.read_text()


@pytest.mark.parametrize("path", EXPLICIT_FILES, ids=_ids(EXPLICIT_FILES))
def test_explicit_round_trip_gives_an_equal_model(path: Path) -> None:
    try:
        lock = read_lockfile(path)
    except LockfileError as err:  # e.g. an explicit file of URLs from several subdirs and no platform line
        assert err.file == str(path) and err.hint
        return
    for platform in lock.platform_names:
        assert parse_explicit(render_explicit(lock, platform), source="x.lock") == lock
    assert not lock.has_dependencies


# --- generated locks ----------------------------------------------------------------------

_NAME = st.from_regex(r"[a-z]([a-z0-9_\-]{0,7}[a-z0-9])?", fullmatch=True)
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_CONSTRAINT = st.one_of(st.sampled_from(["", "*", ">=1.2", "1.10", "3.12.* *_cp312", ">=2,<3", "true", "'q'"]),
                        _TEXT.map(str.strip))  # fmt: skip
_CATEGORIES = st.lists(
    st.tuples(st.one_of(st.sampled_from(["main", "dev", "test"]), _TEXT.filter(bool)), st.booleans()),
    min_size=1,
    max_size=3,
    unique_by=lambda c: c[0],
).map(lambda cs: tuple(sorted((PackageCategory(n, o) for n, o in cs), key=lambda c: c.name)))
_HEX = "0123456789abcdef"


@st.composite
def _conda_package(draw: st.DrawFn, platform: str, name: str, with_deps: bool) -> LockedCondaPackage:
    version = draw(st.from_regex(r"(0|[1-9][0-9]{0,3})(\.(0|[1-9][0-9]{0,2})){0,2}[a-z]?", fullmatch=True))
    build = draw(st.from_regex(r"[a-z0-9_]{1,8}", fullmatch=True))
    subdir = draw(st.sampled_from([platform, "noarch"]))
    channel = draw(st.sampled_from(["https://conda.anaconda.org/conda-forge", "https://repo.example/x/ch"]))
    deps = draw(st.dictionaries(_NAME, _CONSTRAINT, max_size=4)) if with_deps else {}
    return LockedCondaPackage(
        name=name,
        version=version,
        build=build,
        build_number=build_number_of(build),
        subdir=subdir,
        channel=channel,
        url=f"{channel}/{subdir}/{name}-{version}-{build}.conda",
        sha256=draw(st.one_of(st.none(), st.text(_HEX, min_size=64, max_size=64))),
        md5=draw(st.text(_HEX, min_size=32, max_size=32)),
        depends=tuple(f"{k} {v}".strip() for k, v in sorted(deps.items())),
        categories=draw(_CATEGORIES),
    )


@st.composite
def _pip_package(draw: st.DrawFn, name: str, with_deps: bool) -> LockedPipPackage:
    deps = tuple(draw(st.dictionaries(_NAME, _CONSTRAINT, max_size=4)).items()) if with_deps else ()
    version = draw(st.from_regex(r"(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){0,2}", fullmatch=True))  # PEP 440 normal
    return LockedPipPackage(
        name=name,
        version=version,
        url=f"https://files.example/{name}-{version}-py3-none-any.whl",
        sha256=draw(st.one_of(st.none(), st.text(_HEX, min_size=64, max_size=64))),
        requires_dist=tuple(k if v in ("", "*") else f"{k} {v}" for k, v in deps),
        categories=draw(_CATEGORIES),
        dependencies=deps,
        source_url=draw(st.one_of(st.none(), st.just(f"https://git.example/{name}.tar.gz"))),
    )


@st.composite
def conda_lock_models(draw: st.DrawFn) -> EnvironmentLock:
    """Locks within what conda-lock.yml holds: md5 everywhere, dependency maps, categories, custom_metadata."""
    with_deps = draw(st.booleans())
    platforms = draw(st.lists(st.sampled_from(["linux-64", "osx-arm64", "win-64"]), min_size=1, max_size=2,
                              unique=True))  # fmt: skip
    locks = {}
    for platform in sorted(platforms):
        conda_names = draw(st.lists(_NAME, max_size=4, unique=True))
        pip_names = draw(st.lists(_NAME.map(lambda n: n.replace("_", "-")), max_size=3, unique=True))
        locks[platform] = PlatformLock(
            platform,
            conda=tuple(draw(_conda_package(platform, n, with_deps)) for n in sorted(conda_names)),
            pip=tuple(draw(_pip_package(n, with_deps)) for n in sorted(pip_names)),
        )
    custom = draw(st.dictionaries(_TEXT.filter(lambda k: not k.startswith("envyard.")), _TEXT, max_size=3))
    return EnvironmentLock(
        platforms=locks,
        name=draw(st.one_of(st.none(), _TEXT.filter(bool))),
        channels=tuple(draw(st.lists(_TEXT.filter(bool), max_size=2, unique=True))),
        content_hash={p: draw(st.text(_HEX, min_size=1, max_size=8)) for p in locks if draw(st.booleans())},
        requested={p: tuple(draw(st.lists(_TEXT, min_size=1, max_size=2))) for p in locks if draw(st.booleans())},
        sources=tuple(draw(st.lists(_TEXT, max_size=2))),
        custom_metadata=dict(sorted(custom.items())),
        has_dependencies=with_deps,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conda_lock_models())
def test_generated_locks_survive_conda_lock_yml(lock: EnvironmentLock) -> None:
    text = render_conda_lock(lock)
    assert parse_conda_lock(text, source="conda-lock.yml") == lock


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conda_lock_models())
def test_generated_locks_survive_explicit_files_as_far_as_they_can_hold(lock: EnvironmentLock) -> None:
    for platform in lock.platform_names:
        warnings: list[str] = []
        back = parse_explicit(render_explicit(lock, platform, warnings.append), source="x.lock")
        if not (lock.platforms[platform].conda or lock.platforms[platform].pip):
            continue
        kept = lock.platforms[platform]
        rendered = [p for p in (*kept.conda, *kept.pip) if any(c.name in ("main", "dev") for c in p.categories)]
        left_out = len(kept.conda) + len(kept.pip) - len(rendered)
        assert bool(warnings) == bool(left_out)  # what is left out is said
        assert {p.url for p in back.platforms[platform].conda} == {
            p.url for p in rendered if isinstance(p, LockedCondaPackage)
        }
        assert {(p.name, p.sha256) for p in back.platforms[platform].pip} == {
            (p.name, p.sha256) for p in rendered if isinstance(p, LockedPipPackage)
        }


def _pixi_domain(lock: EnvironmentLock) -> EnvironmentLock:
    """What pixi.lock holds of a generated lock: no categories, requires_dist not maps, no custom metadata."""
    platforms = {}
    for name, pl in lock.platforms.items():
        if not (pl.conda or pl.pip):
            continue
        platforms[name] = replace(
            pl,
            conda=tuple(replace(p, categories=MAIN_CATEGORY) for p in pl.conda),
            pip=tuple(replace(p, categories=MAIN_CATEGORY, dependencies=None, source_url=None) for p in pl.pip),
        )
    return EnvironmentLock(platforms=platforms, channels=lock.channels)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conda_lock_models())
def test_generated_locks_survive_pixi_lock_as_far_as_it_can_hold(lock: EnvironmentLock) -> None:
    import tempfile

    # one record per file name: make names unique across platforms so each platform keeps its own record
    unique = replace(
        lock,
        platforms={
            n: replace(pl, pip=tuple(
                replace(p, url=p.url.replace(".whl", f"-{n}.whl"),
                        requires_dist=tuple(normalize_pypi_name(k) for k, _ in p.dependencies))
                for p in pl.pip if p.dependencies is not None))  # fmt: skip
            for n, pl in lock.platforms.items()
        },
    )
    warnings: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pixi.lock"
        write_pixi_lock(unique, path, warnings.append)
        back = read_lockfile(path)
    want = _pixi_domain(unique)  # (requires_dist as normalized PEP 508 names: pixi.lock needs valid requirements)
    conda_urls = [p.url for pl in want.platforms.values() for p in pl.conda]
    if len(conda_urls) == len(set(conda_urls)):  # the same noarch file on two platforms is one record
        assert back == want
    has_categories = any(p.categories != MAIN_CATEGORY for pl in lock.platforms.values() for p in (*pl.conda, *pl.pip))
    assert any("has no categories" in w for w in warnings) == has_categories
    assert any("custom metadata" in w for w in warnings) == bool(lock.custom_metadata)


# --- meaning kept on real files -----------------------------------------------------------


def test_categories_optional_and_star_dependencies_survive(tmp_path: Path) -> None:
    lock = read_lockfile(WITH_PIP)
    linux = lock.platforms["linux-64"]
    categories = {p.name: p.categories for p in (*linux.conda, *linux.pip)}
    assert categories["pytest"] == (PackageCategory("test", True),)
    assert categories["python"] == (PackageCategory("main", False),)
    httpcore = next(p for p in linux.pip if p.name == "httpcore")
    assert ("certifi", "*") in (httpcore.dependencies or ())
    write_lock_files(lock, tmp_path)
    text = (tmp_path / "conda-lock.yml").read_text()
    assert "certifi: '*'" in text and "category: test" in text and "optional: true" in text
    assert read_lockfile(tmp_path / "conda-lock.yml") == lock
    assert why(read_lockfile(tmp_path / "conda-lock.yml"), "certifi", "linux-64") == why(lock, "certifi", "linux-64")


def test_a_package_in_several_categories_is_one_package_with_each(tmp_path: Path) -> None:
    lock = read_lockfile(MULTI_CATEGORIES)
    doc = yaml.safe_load(MULTI_CATEGORIES.read_text())
    listed: dict[tuple[str, str], set[str]] = {}
    for entry in doc["package"]:
        listed.setdefault((entry["platform"], entry["name"]), set()).add(entry["category"])
    got = {(n, p.name): {c.name for c in p.categories} for n, pl in lock.platforms.items() for p in pl.conda}
    assert got == listed and any(len(c) > 1 for c in got.values())


def test_lock_diff_sees_categories_dependencies_and_hashes() -> None:
    lock = read_lockfile(WITH_PIP)
    flattened = replace(
        lock,
        platforms={
            n: replace(
                pl,
                conda=tuple(replace(p, categories=MAIN_CATEGORY) for p in pl.conda),
                pip=tuple(replace(p, categories=MAIN_CATEGORY, dependencies=None, requires_dist=()) for p in pl.pip),
            )
            for n, pl in lock.platforms.items()
        },
    )
    diff = diff_locks(lock, flattened)
    assert not diff.empty
    changed = {c.name: c for c in diff.platforms["linux-64"].changed}
    assert changed["pytest"].details == ("category test (optional) -> main",)
    assert changed["pytest"].old == changed["pytest"].new
    assert "dependency - certifi *" in changed["httpcore"].details
    assert diff_locks(lock, lock).empty
    pl = lock.platforms["linux-64"]
    python = pl.conda_by_name()["python"]
    edited = replace(python, depends=(*python.depends, "zlib >=9"), md5="0" * 32)
    other = replace(lock, platforms={**lock.platforms, "linux-64": replace(
        pl, conda=tuple(edited if p is python else p for p in pl.conda))})  # fmt: skip
    details = diff_locks(lock, other).platforms["linux-64"].changed[0].details
    assert "dependency + zlib >=9" in details and any(d.startswith("md5 ") for d in details)
    # an @EXPLICIT file has no dependency data: nothing to compare there, and no false difference
    explicit = parse_explicit(render_explicit(lock, "linux-64"), source="x.lock")
    main_only = {
        p.name for p in (*pl.conda, *pl.pip) if any(c.name in ("main", "dev") for c in p.categories)
    }
    diff = diff_locks(replace(lock, platforms={"linux-64": pl}), explicit).platforms["linux-64"]
    assert {c.name for c in diff.removed} == {p.name for p in pl.conda if p.name not in main_only} | {
        p.normalized_name for p in pl.pip if p.name not in main_only
    }
    assert all(not d.startswith("dependency") for c in diff.changed for d in c.details)


# --- pixi.lock import ---------------------------------------------------------------------


def test_source_and_editable_packages_are_skipped_with_one_warning_each() -> None:
    warnings: list[str] = []
    lock = read_lockfile(ROS_PIXI, warn=warnings.append)
    assert len(warnings) == 2 and all("skipped conda source package ros-jazzy-my-" in w for w in warnings)
    assert {n: len(pl.conda) for n, pl in lock.platforms.items()} == {"linux-64": 201, "osx-arm64": 192, "win-64": 190}
    warnings.clear()
    read_lockfile(CONDA_LOCK_PIXI, warn=warnings.append)
    assert warnings == [
        f"{CONDA_LOCK_PIXI}: environment default: skipped local PyPI package conda-lock (./) on linux-64, "
        "linux-aarch64, osx-64, osx-arm64, win-64: built from source, it cannot be locked as an artifact"
    ]
    warnings.clear()
    envs = read_lock_environments(PY_RATTLER_PIXI, warn=warnings.append)
    assert list(envs) == ["default", "docs", "repl", "test"]
    assert len(warnings) == 1 and "environment test: skipped conda source package py-rattler (.)" in warnings[0]


def test_all_environments_go_to_pixi_lock_and_the_others_say_so(tmp_path: Path) -> None:
    envs = read_lock_environments(CONDA_LOCK_PIXI)
    warnings: list[str] = []
    written = write_lock_files(envs["default"], tmp_path / "out", warn=warnings.append, environments=envs)
    assert parse_pixi_environments(written["pixi.lock"]) == envs
    def urls(lock: EnvironmentLock) -> dict[str, set[str]]:
        return {n: {p.url for p in (*pl.conda, *pl.pip)} for n, pl in lock.platforms.items()}

    assert urls(read_lockfile(written["conda-lock.yml"])) == urls(envs["default"])
    assert warnings == [
        "conda-lock.yml and conda-<platform>.lock hold one environment (default): "
        "environments dev, minimal are written to pixi.lock only"
    ]


def test_a_failed_write_leaves_an_existing_directory_as_it_was(tmp_path: Path) -> None:
    lock = read_lockfile(WITH_PIP)
    out = tmp_path / "out"
    write_lock_files(lock, out)
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    pl = lock.platforms["linux-64"]
    bad = replace(lock, platforms={**lock.platforms, "linux-64": replace(
        pl, pip=(*pl.pip, replace(pl.pip[0], name="zz", version="<dynamic>")))})  # fmt: skip
    with pytest.raises(LockfileError) as err:
        write_lock_files(bad, out)
    assert err.value.file == str(out / "pixi.lock")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging directory left beside it


# --- why --------------------------------------------------------------------------------


def test_why_on_an_explicit_lock_says_it_has_no_dependency_data() -> None:
    lock = read_lockfile(PANGEO_EXPLICIT)
    name = "openssl"
    with pytest.raises(NoDependencyDataError, match="no dependency information"):
        why(lock, name)
    # and a conda-lock.yml made from it keeps saying so
    back = parse_conda_lock(render_conda_lock(lock), source="conda-lock.yml")
    assert not back.has_dependencies
    with pytest.raises(NoDependencyDataError):
        why(back, name)


def test_why_follows_pip_requires_dist_in_our_pixi_output(tmp_path: Path) -> None:
    lock = read_lockfile(WITH_PIP)
    write_lock_files(lock, tmp_path)
    pixi = read_lockfile(tmp_path / "pixi.lock")
    path = why(pixi, "certifi", "linux-64")
    assert path[-1] == "certifi (pip)" and len(path) > 1
    httpcore = next(p for p in pixi.platforms["linux-64"].pip if p.name == "httpcore")
    assert "certifi" in httpcore.requires_dist and httpcore.sha256


def test_why_all_lists_every_path_shortest_first_and_caps_them() -> None:
    lock = read_lockfile(LOCKS / "conda-lock" / "pangeo-data__pangeo-docker-images__ml-notebook_conda-lock.yml")
    result = why_all(lock, "libzlib", max_paths=40)
    lengths = [len(p) for p in result.paths]
    assert lengths == sorted(lengths) and len(result.paths) == 40 and result.truncated
    assert all(p[-1] == "libzlib" and len(set(p)) == len(p) for p in result.paths)
    assert result.paths[0] == tuple(why(lock, "libzlib"))
    few = why_all(lock, "libzlib", max_paths=100_000)  # bounded however many paths exist
    assert few.truncated and len(few.paths) <= 100_000


def test_why_names_a_package_nothing_leads_to() -> None:
    def pkg(name: str, *deps: str) -> LockedCondaPackage:
        return LockedCondaPackage(name, "1", "0", 0, "linux-64", "c", f"c/{name}.conda", None, None, deps)

    lock = EnvironmentLock({"linux-64": PlatformLock("linux-64", conda=(pkg("a", "b"), pkg("b"), pkg("c")))},
                           requested={"linux-64": ("a",)})  # fmt: skip
    assert why(lock, "b") == ["a", "b"]
    with pytest.raises(NoDependencyPathError, match="no recorded dependency leads to it"):
        why(lock, "c")


def test_json_of_a_diff_lists_details_only_when_there_are_some() -> None:
    lock = read_lockfile(WITH_PIP)
    pl = lock.platforms["linux-64"]
    dev = (PackageCategory("dev", True),)
    other = replace(lock, platforms={"linux-64": replace(pl, conda=tuple(
        replace(p, categories=dev) if p.name == "python" else p for p in pl.conda))})  # fmt: skip
    as_json = json.loads(json.dumps(diff_locks(replace(lock, platforms={"linux-64": pl}), other).to_json()))
    assert as_json["linux-64"]["changed"] == [{
        "name": "python", "manager": "conda", "old": pl.conda_by_name()["python"].version + "="
        + pl.conda_by_name()["python"].build, "new": pl.conda_by_name()["python"].version + "="
        + pl.conda_by_name()["python"].build, "details": ["category main -> dev (optional)"]}]  # fmt: skip
