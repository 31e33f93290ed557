"""Spec parsing against real environment files (../shared/data) and hand-written edge cases."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import rattler
import yaml
from packaging.requirements import Requirement

from envyard.builder.errors import SpecError
from envyard.builder.spec import (
    KNOWN_PLATFORMS,
    TOP_LEVEL_KEYS,
    EnvironmentSpec,
    detect_input_kind,
    normalize_matchspec,
    parse_environment_yaml,
    parse_requirements_txt,
    read_spec,
)
from envyard.builder.spec_selectors import SelectorError, evaluate_selector, parse_selector, true_names

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared" / "data"
ENVS = SHARED / "envs"
CONDA_ENV = SHARED / "fixtures" / "conda-env-fixtures" / "tests" / "env" / "support"
CONDA_LOCK = SHARED / "fixtures" / "conda-lock" / "tests"
LOCKS = SHARED / "locks"
SCHEMA = REPO_ROOT / "specs" / "environment.schema.json"
EXAMPLES = REPO_ROOT / "specs" / "examples"
MISSING = f"shared data not found at {SHARED} (it sits beside the checkout as ../shared/data)"
LOCAL = "editable/local pip requirements cannot be built by a service"


def _not_spec(path: Path) -> bool:
    """conda-lock test files that are not environment specs (lockfiles, lookups, recipes, vpkg files)."""
    name = path.name
    return name.startswith("conda-lock") or "virtual-packages" in name or name == "meta.yaml" or "lookup" in name


def _spec_files() -> list[Path]:
    if not SHARED.is_dir():
        return []
    files = sorted(ENVS.glob("*.yml"))
    files += sorted(p for p in CONDA_ENV.rglob("*") if p.suffix in (".yml", ".yaml", ".txt"))
    files += sorted(p for p in CONDA_LOCK.rglob("*.y*ml") if not _not_spec(p))
    return files


def _rel(path: Path) -> str:
    return path.relative_to(SHARED).as_posix()


def _params(paths: list[Path]) -> list[object]:
    if not paths:
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING))]
    return [pytest.param(p, id=_rel(p)) for p in paths]


def _shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(MISSING)
    return path


#: Real files that must fail: relative path -> (line, field, text in the message).
EXPECTED_FAILURES: dict[str, tuple[int | None, str | None, str]] = {
    "envs/CompVis__stable-diffusion__environment.yml": (34, "pip", LOCAL),
    "envs/conda__conda__tests_env_support_advanced-pip_env_template.yml": (18, "pip", LOCAL),
    "fixtures/conda-env-fixtures/tests/env/support/advanced-pip/env_template.yml": (18, "pip", LOCAL),
    "envs/conda__conda__tests_env_support_channels_with_envvars.yml": (4, "channels", "'CONDA_TOKEN'"),
    "fixtures/conda-env-fixtures/tests/env/support/channels_with_envvars.yml": (4, "channels", "'CONDA_TOKEN'"),
    "envs/conda__conda__tests_env_support_invalid_keys.yml": (1, "names", "unknown key 'names'"),
    "fixtures/conda-env-fixtures/tests/env/support/invalid_keys.yml": (1, "names", "unknown key 'names'"),
    "envs/conda__conda-lock__tests_test-pip-repositories_environment.yml": (4, "pip-repositories", "'PIP_USER'"),
    "fixtures/conda-lock/tests/test-pip-repositories/environment.yaml": (4, "pip-repositories", "'PIP_USER'"),
    "envs/geopandas__geopandas__ci_envs_313-dev.yml": (36, "pip", "has no package name"),
    "fixtures/conda-lock/tests/test-git/environment.yml": (7, "pip", "has no package name"),
    "fixtures/conda-lock/tests/test-git-tag/environment.yml": (7, "pip", "has no package name"),
    "fixtures/conda-lock/tests/test-local-pip/environment.yml": (9, "pip", LOCAL),
    "fixtures/conda-lock/tests/test-pypi-resolve-gh155/environment.yml": (4, "platform", "unknown key 'platform'"),
    "fixtures/conda-env-fixtures/tests/env/support/explicit.txt": (None, None, "@EXPLICIT lockfile"),
}


def _raw_line(path: Path, line: int) -> str:
    return path.read_text(encoding="utf-8").splitlines()[line - 1]


def _norm(text: str) -> str:
    return text.lower().replace("_", "-")


@pytest.mark.parametrize("path", _params(_spec_files()))
def test_real_file_parses_or_fails_with_location(path: Path) -> None:
    rel = _rel(path)
    expected = EXPECTED_FAILURES.get(rel)
    if expected is not None:
        with pytest.raises(SpecError) as info:
            read_spec(path)
        err = info.value
        line, field, text = expected
        assert (err.line, err.field) == (line, field), err.one_line()
        assert text in err.message
        assert err.one_line().startswith(f"{path}{f':{line}' if line else ''}: ")
        assert err.hint
        return
    spec = read_spec(path)
    assert spec.source == str(path)
    for dep in spec.dependencies:
        match = rattler.MatchSpec(dep.spec, strict=False)
        assert dep.line is not None and match.name is not None
        assert _norm(match.name.normalized) in _norm(_raw_line(path, dep.line)), (dep, rel)
    for req in spec.pip.requirements if spec.pip else ():
        name = Requirement(req.text).name
        assert req.line is not None
        raw = _norm(_raw_line(path, req.line))
        assert _norm(name) in raw or raw.lstrip(" -").startswith("-r"), (req, rel)
    for platform in ("linux-64", "osx-arm64", "win-64"):
        assert set(spec.conda_specs(platform)) <= {d.spec for d in spec.dependencies}
    assert json.loads(json.dumps(spec.canonical())) == spec.canonical()


@pytest.mark.parametrize(
    ("rel", "expected"),
    [(rel, exp) for rel, exp in EXPECTED_FAILURES.items()],
    ids=list(EXPECTED_FAILURES),
)
def test_expected_failures_are_listed_files(rel: str, expected: tuple[int | None, str | None, str]) -> None:
    """Every expected failure names a real file that the parametrized test above visits."""
    path = _shared(*rel.split("/"))
    assert path in _spec_files()
    assert expected[2]


# ---------------------------------------------------------------------------------------------
# Specific content of real files


def test_pangeo_ml_notebook() -> None:
    spec = read_spec(_shared("envs", "pangeo-data__pangeo-docker-images__ml-notebook_environment.yml"))
    assert spec.name == "pangeo"
    assert spec.channels == ("conda-forge",)
    assert spec.nodefaults is True
    assert spec.conda_specs("linux-64") == (
        "cuda-version>=12.6",
        "flax>=0.10.2",
        "jax",
        "jaxlib>=0.4.31=cuda12*",
        "jupyterlab-nvdashboard",
        "keras-cv",
        "tensorflow>=2.17.0=cuda12*",
    )
    jaxlib = rattler.MatchSpec(spec.conda_specs("linux-64")[3], strict=False)
    assert (str(jaxlib.version), jaxlib.build) == (">=0.4.31", "cuda12*")
    assert [d.line for d in spec.dependencies] == list(range(8, 15))
    assert spec.pip is None


def test_badly_formatted_gdal_spec_is_normalized() -> None:
    spec = read_spec(_shared("envs", "conda__conda-lock__tests_gdal_environment.yml"))
    assert spec.channels == ("conda-forge", "defaults")
    assert spec.dependencies[0].spec == "python >=3.8,<3.9"
    assert spec.dependencies[0].line == 6
    assert spec.pip_requirements("linux-64") == ("toolz",)
    assert spec.pip is not None and spec.pip.index_url is None


def test_filter_platform_selectors() -> None:
    spec = read_spec(_shared("fixtures", "conda-lock", "tests", "test-env-filter-platform", "environment.yml"))
    assert spec.platforms == ("osx-arm64", "osx-64", "linux-64")
    assert [(d.spec, d.line, d.selector) for d in spec.dependencies] == [
        ("python <3.11", 4, None),
        ("clang_osx-arm64", 5, "arm64"),
        ("clang_osx-64", 6, "osx64"),
        ("gcc_linux-64>=6", 7, "linux64"),
    ]
    assert spec.conda_specs("linux-64") == ("python <3.11", "gcc_linux-64>=6")
    assert spec.conda_specs("osx-arm64") == ("python <3.11", "clang_osx-arm64")
    assert spec.conda_specs("osx-64") == ("python <3.11", "clang_osx-64")
    assert spec.conda_specs("linux-aarch64") == ("python <3.11",)


def test_pip_line_selector() -> None:
    spec = read_spec(_shared("fixtures", "conda-lock", "tests", "test-pip-with-platform-selector", "environment.yml"))
    assert spec.pip_requirements("linux-64") == ("psutil",)
    assert spec.pip_requirements("osx-arm64") == ()
    assert spec.conda_specs("osx-arm64") == ("tomli",)


def test_channels_with_envvars_expanded_from_environ() -> None:
    path = _shared("envs", "conda__conda__tests_env_support_channels_with_envvars.yml")
    spec = read_spec(path, environ={"CONDA_TOKEN": "tok-1", "OTHER_KEY": "tok-2", "UNUSED": "x"})
    assert spec.name == "nlp"
    assert spec.channels == (
        "https://localhost/t/tok-1/stable",
        "https://localhost/t/tok-2/stable",
        "conda-forge",
        "defaults",
    )
    assert dict(spec.channel_env_vars) == {
        "https://localhost/t/tok-1/stable": ("CONDA_TOKEN",),
        "https://localhost/t/tok-2/stable": ("OTHER_KEY",),
    }
    canonical = json.dumps(spec.canonical())
    assert "tok-1" not in canonical and "${CONDA_TOKEN}" in canonical
    with pytest.raises(SpecError) as info:
        read_spec(path, environ={"CONDA_TOKEN": "tok-1"})
    assert "'OTHER_KEY'" in info.value.message and info.value.line == 5
    assert "https://localhost/t/${OTHER_KEY}/stable" in info.value.message


def test_pip_repositories_expanded_and_redacted() -> None:
    path = _shared("fixtures", "conda-lock", "tests", "test-pip-repositories", "environment.yaml")
    spec = read_spec(path, environ={"PIP_USER": "alice", "PIP_PASSWORD": "s3cret"})
    assert spec.pip is not None
    assert spec.pip.extra_index_urls == (
        "http://alice:s3cret@private-pypi.org/api/pypi/simple",
        "http://alice:s3cret@private-pypi-custom-port.org:8080/api/pypi/simple",
    )
    assert spec.pip_requirements("linux-64") == (
        "fake-private-package==1.0.0",
        "fake-private-package-custom-port==1.0.0",
    )
    canonical = spec.canonical()
    assert canonical["pip"]["extra_index_urls"][1] == "http://private-pypi-custom-port.org:8080/api/pypi/simple"
    assert "s3cret" not in json.dumps(canonical)


def test_advanced_pip_rejects_editable_with_the_line() -> None:
    path = _shared("envs", "conda__conda__tests_env_support_advanced-pip_env_template.yml")
    with pytest.raises(SpecError) as info:
        read_spec(path)
    assert info.value.line == 18
    assert "-e git+{ARGH_PATH_PLACEHOLDER}#egg=argh" in info.value.message
    assert info.value.hint == "publish the package to an index or add it as a wheel URL"


def test_advanced_pip_includes_and_index_options(tmp_path: Path) -> None:
    """conda's advanced-pip example without its editable lines: -r relative to the spec, index options."""
    source = _shared("fixtures", "conda-env-fixtures", "tests", "env", "support", "advanced-pip")
    text = (source / "env_template.yml").read_text()
    kept = "\n".join("    # (removed)" if line.strip().startswith("- -e") else line for line in text.splitlines())
    (tmp_path / "env.yml").write_text(kept)
    shutil.copy(source / "another-project-requirements.txt", tmp_path)
    spec = read_spec(tmp_path / "env.yml")
    assert spec.name == "advanced-pip-example"
    assert spec.conda_specs("linux-64") == ("pip",)
    assert spec.pip is not None
    assert spec.pip.index_url == "https://pypi.doubanio.com/simple"
    assert spec.pip.extra_index_urls == ("https://pypi.python.org/simple",)
    assert [(r.text, r.line) for r in spec.pip.requirements] == [("xmltodict==0.10.2", 14), ("six", 27)]
    (tmp_path / "another-project-requirements.txt").unlink()
    with pytest.raises(SpecError) as info:
        read_spec(tmp_path / "env.yml")
    assert (info.value.line, info.value.field) == (27, "pip")
    assert "another-project-requirements.txt" in info.value.message


def test_geopandas_pip_options_on_one_line(tmp_path: Path) -> None:
    text = _shared("envs", "geopandas__geopandas__ci_envs_313-dev.yml").read_text()
    (tmp_path / "env.yml").write_text("\n".join(x for x in text.splitlines() if "git+" not in x))
    spec = read_spec(tmp_path / "env.yml")
    assert spec.pip is not None
    assert spec.pip.index_url == "https://pypi.anaconda.org/scientific-python-nightly-wheels/simple"
    assert spec.pip.extra_index_urls == ("https://pypi.fury.io/arrow-nightlies/", "https://pypi.org/simple")
    assert spec.pip_requirements("linux-64") == (
        "geopy", "mapclassify>=2.6.0", "numpy>=2.0.0", "fiona", "pandas", "matplotlib", "pyarrow",
    )  # fmt: skip
    assert "sqlalchemy<2.1" in spec.conda_specs("linux-64")


def test_geopandas_vcs_line_hint_names_the_package() -> None:
    with pytest.raises(SpecError) as info:
        read_spec(_shared("envs", "geopandas__geopandas__ci_envs_313-dev.yml"))
    assert info.value.hint == "write it as 'shapely @ git+https://github.com/shapely/shapely.git@main'"


def test_unknown_keys_in_conda_invalid_keys() -> None:
    with pytest.raises(SpecError) as info:
        read_spec(_shared("envs", "conda__conda__tests_env_support_invalid_keys.yml"))
    err = info.value
    assert err.hint == "did you mean 'name'?"
    assert err.details["unknown_keys"] == {
        "names": "did you mean 'name'?",
        "chanels": "did you mean 'channels'?",
        "dependecies": "did you mean 'dependencies'?",
        "prefis": "did you mean 'prefix'?",
    }
    assert "also unknown: 'chanels', 'dependecies', 'prefis'" in err.one_line()


def test_misspelled_platforms_key_in_conda_lock_fixture() -> None:
    with pytest.raises(SpecError) as info:
        read_spec(_shared("fixtures", "conda-lock", "tests", "test-pypi-resolve-gh155", "environment.yml"))
    assert info.value.hint == "did you mean 'platforms'?"


def test_real_specs_keep_spec_forms() -> None:
    host = read_spec(_shared("fixtures", "conda-env-fixtures", "tests", "env", "support", "example",
                             "environment_host_port.yml"))  # fmt: skip
    assert host.conda_specs("linux-64") == ("https://104.17.92.24:443::flask=1.0.2",)
    sklearn = read_spec(_shared("envs", "scikit-learn__scikit-learn__build_tools_azure_pymin_conda_defaults_openblas"
                                "_environment.yml"))  # fmt: skip
    blas = next(d for d in sklearn.dependencies if d.spec.startswith("blas"))
    assert (blas.spec, rattler.MatchSpec(blas.spec, strict=False).build) == ("blas[build=openblas]", "openblas")
    assert sklearn.pip_requirements("linux-64") == ("threadpoolctl==3.1.0", "meson-python==0.16.0")
    assert all(d.selector is None for d in sklearn.dependencies)  # "# min" comments are not selectors
    r2d = read_spec(_shared("envs", "jupyterhub__repo2docker__repo2docker_buildpacks_conda_environment.yml"))
    assert "ipywidgets==8.*" in r2d.conda_specs("linux-64") and r2d.channels == ("conda-forge",)
    store = read_spec(_shared("envs", "conda-incubator__conda-store__conda-store-server_tests_user_journeys_test_data"
                              "_complicated_environment.yml"))  # fmt: skip
    assert store.pip is not None and len(store.pip.requirements) == 24
    assert "pytest-mock >= 3.10.0,<4.0" in store.pip_requirements("linux-64")


def test_pip_hash_option_stripped_and_wheel_urls_accepted() -> None:
    hashed = read_spec(_shared("fixtures", "conda-lock", "tests", "test-pip-hash-checking", "environment.yml"))
    assert hashed.pip_requirements("linux-64") == ("flit-core === 3.9.0",)
    urls = read_spec(_shared("fixtures", "conda-lock", "tests", "test-pip-full-url", "environment.yml"))
    assert [Requirement(r).name for r in urls.pip_requirements("linux-64")] == ["requests", "typing-extensions"]


def test_variables_prefix_and_empty_dependencies() -> None:
    valid = read_spec(_shared("fixtures", "conda-env-fixtures", "tests", "env", "support", "valid_keys.yml"))
    assert dict(valid.variables) == {"VARIABLE": "value"} and valid.channels == ("anaconda",)
    pinned = read_spec(_shared("fixtures", "conda-env-fixtures", "tests", "env", "support", "example",
                               "environment_pinned.yml"))  # fmt: skip
    assert list(pinned.variables.items()) == [
        ("FIXED", "fixed"), ("CHANGES", "original_value"), ("GETS_DELETED", "not_actually_removed_though"),
    ]  # fmt: skip
    empty = read_spec(_shared("fixtures", "conda-env-fixtures", "tests", "env", "support", "empty_deps.yml"))
    assert (empty.name, empty.dependencies, empty.pip) == ("nlp", (), None)


def test_conda_requirements_txt_is_read_as_pip_only() -> None:
    spec = read_spec(_shared("fixtures", "conda-env-fixtures", "tests", "env", "support", "requirements.txt"))
    assert spec.dependencies == () and spec.channels == ()
    assert spec.pip_requirements("linux-64") == ("conda-package-handling==2.2.0",)


# ---------------------------------------------------------------------------------------------
# Input kinds


def _lock_files() -> list[Path]:
    return sorted(p for p in LOCKS.rglob("*") if p.is_file() and p.name != "SOURCES.tsv") if SHARED.is_dir() else []


@pytest.mark.parametrize("path", _params(_lock_files()))
def test_detect_input_kind_on_locks(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    expected = {"conda-lock": "conda-lock", "pixi": "pixi-lock", "explicit": "explicit"}[path.parent.name]
    if "legacy-condalock-fmt" in path.name:
        expected = "conda-lock"  # pixi's 2023 lock format was conda-lock's
    assert detect_input_kind(path, text) == expected
    with pytest.raises(SpecError) as info:
        read_spec(path)
    assert info.value.details == {"kind": expected}
    assert "not an environment spec" in info.value.one_line()


def test_detect_input_kind_on_specs_and_conda_lock_fixtures() -> None:
    zlib = _shared("fixtures", "conda-lock", "tests", "zlib")
    assert detect_input_kind(zlib / "conda-linux-64.lock", (zlib / "conda-linux-64.lock").read_text()) == "explicit"
    assert detect_input_kind(zlib / "environment.yml", (zlib / "environment.yml").read_text()) == "environment"
    lock = CONDA_LOCK / "test-lockfile" / "conda-lock.yml"
    assert detect_input_kind(lock, lock.read_text()) == "conda-lock"
    assert detect_input_kind("requirements.txt", "numpy\n") == "requirements"
    assert detect_input_kind("environment.yml", "") == "environment"
    assert detect_input_kind("spec", "dependencies:\n  - numpy\n") == "environment"
    assert detect_input_kind("reqs", "numpy>=1\n") == "requirements"
    assert detect_input_kind("x.txt", "# c\n@EXPLICIT\nhttps://x/a-1-0.conda\n") == "explicit"


# ---------------------------------------------------------------------------------------------
# Selectors


@pytest.mark.parametrize(
    ("selector", "holds_on"),
    [
        ("linux", {"linux-64", "linux-aarch64", "linux-ppc64le"}),
        ("linux64", {"linux-64"}),
        ("aarch64", {"linux-aarch64"}),
        ("ppc64le", {"linux-ppc64le"}),
        ("arm64", {"osx-arm64", "win-arm64"}),
        ("osx", {"osx-64", "osx-arm64"}),
        ("osx64", {"osx-64"}),
        ("win", {"win-64", "win-arm64"}),
        ("win64", {"win-64"}),
        ("unix", {"linux-64", "linux-aarch64", "linux-ppc64le", "osx-64", "osx-arm64"}),
        ("x86_64", {"linux-64", "osx-64", "win-64"}),
        ("x86", {"linux-64", "osx-64", "win-64"}),
        ("linux and not aarch64", {"linux-64", "linux-ppc64le"}),
        ("not (linux or osx)", {"win-64", "win-arm64"}),
        ("osx and arm64 or win64", {"osx-arm64", "win-64"}),
        ("not not linux64", {"linux-64"}),
    ],
)
def test_selector_truth_table(selector: str, holds_on: set[str]) -> None:
    platforms = ("linux-64", "linux-aarch64", "linux-ppc64le", "osx-64", "osx-arm64", "win-64", "win-arm64")
    assert {p for p in platforms if evaluate_selector(selector, p)} == holds_on


@pytest.mark.parametrize("bad", ["", "py27", "linux and", "(linux", "linux)", "linux osx", "linux == 1", "and"])
def test_malformed_selectors(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(bad)


def test_true_names_linux32_and_win32() -> None:
    assert true_names("linux-32") == {"linux", "linux32", "unix", "x86"}
    assert true_names("win-32") == {"win", "win32", "x86"}


def test_selector_errors_carry_the_line() -> None:
    with pytest.raises(SpecError) as info:
        parse_environment_yaml("dependencies:\n  - zlib\n  - foo  # [linux and py>=38]\n", source="env.yml")
    assert (info.value.line, info.value.field) == (3, "dependencies")
    assert info.value.one_line().startswith("env.yml:3: dependencies: invalid selector [linux and py>=38]")


def test_selector_comment_after_quoted_and_url_items() -> None:
    spec = parse_environment_yaml(
        "dependencies:\n"
        '  - "zlib"   # [win]\n'
        "  - ipywidgets==8.*   # https://github.com/jupyter-widgets/ipywidgets\n"
        "  - pip:\n"
        "    - pkg @ https://x.org/pkg-1.0-py3-none-any.whl#sha256=00  # [osx]\n"
    )
    assert [(d.spec, d.selector) for d in spec.dependencies] == [("zlib", "win"), ("ipywidgets==8.*", None)]
    assert spec.pip_requirements("osx-64") == ("pkg @ https://x.org/pkg-1.0-py3-none-any.whl#sha256=00",)
    assert spec.pip_requirements("linux-64") == ()


def test_sel_mapping_items() -> None:
    spec = parse_environment_yaml(
        "channels: [conda-forge]\n"
        "dependencies:\n"
        "  - python 3.12.*\n"
        "  - sel(linux): cudatoolkit 11.*\n"
        "  - sel(osx or win): llvm-openmp\n"
        "  - pip:\n"
        "    - sel(win): pywin32\n"
    )
    assert [(d.spec, d.line, d.selector) for d in spec.dependencies] == [
        ("python 3.12.*", 3, None),
        ("cudatoolkit 11.*", 4, "linux"),
        ("llvm-openmp", 5, "osx or win"),
    ]
    assert spec.conda_specs("linux-aarch64") == ("python 3.12.*", "cudatoolkit 11.*")
    assert spec.conda_specs("win-64") == ("python 3.12.*", "llvm-openmp")
    assert spec.pip_requirements("win-64") == ("pywin32",)
    with pytest.raises(SpecError) as info:
        parse_environment_yaml("dependencies:\n  - sel(bsd): foo\n")
    assert info.value.line == 2 and "unknown selector name 'bsd'" in info.value.message


# ---------------------------------------------------------------------------------------------
# MatchSpecs


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("python >= 3.8, < 3.9", "python >=3.8,<3.9"),
        ("python  >=3.8 ,<3.9", "python >=3.8,<3.9"),
        ("numpy = 1.26", "numpy =1.26"),
        ("pandas =2.0", "pandas =2.0"),
        ("cudnn >=8,<9", "cudnn >=8,<9"),
        ("jaxlib>=0.4.31=cuda12*", "jaxlib>=0.4.31=cuda12*"),
        ("pytorch >=2.7 cuda12*", "pytorch >=2.7 cuda12*"),
        ("blas * mkl", "blas * mkl"),
        ("blas[build=mkl]", "blas[build=mkl]"),
        ("numpy=1.26=*_0", "numpy=1.26=*_0"),
        ("conda-forge::numpy", "conda-forge::numpy"),
        ("pkg 1.2.*", "pkg 1.2.*"),
    ],
)
def test_matchspec_normalization_keeps_meaning(raw: str, normalized: str) -> None:
    assert normalize_matchspec(raw) == normalized
    spec = parse_environment_yaml(f"dependencies:\n  - {raw}\n")
    assert spec.dependencies[0].spec == normalized
    assert str(rattler.MatchSpec(normalized, strict=False)) == str(rattler.MatchSpec(raw, strict=False))


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("'*'", "invalid MatchSpec '*'"),
        ("numpy >=1.2 <2", "build string '<2' looks like a version constraint"),
        ("$bad", "invalid MatchSpec '$bad'"),
        ("", "empty dependency"),
    ],
)
def test_invalid_matchspecs(item: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_environment_yaml(f"name: x\ndependencies:\n  - zlib\n  - {item}\n", source="e.yml")
    assert (info.value.line, info.value.field) == (4, "dependencies")
    assert message in info.value.message
    assert "\n" not in info.value.one_line()


# ---------------------------------------------------------------------------------------------
# Structure errors


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        ("dependecies:\n  - numpy\n", 1, "dependecies", "unknown key 'dependecies'"),
        ("name: a\nchanels: [conda-forge]\n", 2, "chanels", "unknown key 'chanels'"),
        ("name: a\nname: b\n", 2, "name", "duplicate or empty key 'name'"),
        ("name: [a]\n", 1, "name", "name must be a string"),
        ("channels: conda-forge\n", 1, "channels", "channels must be a list"),
        ("channels:\n  - conda-forge\n  - {a: 1}\n", 3, "channels", "must be a list of channel names"),
        ("channels: ['conda forge']\n", 1, "channels", "invalid channel 'conda forge'"),
        ("channels: ['https://x/${TOKEN}/c']\n", 1, "channels", "environment variable 'TOKEN' used in"),
        ("platforms: [linux-64, linux64]\n", 1, "platforms", "unknown platform 'linux64'"),
        ("variables:\n  A: [1]\n", 2, "variables.A", "must be a string or number"),
        ("virtual-packages:\n  cuda: '12'\n", 2, "virtual-packages.cuda", "must start with '__'"),
        ("virtual-packages:\n  __cuda: '12 a b'\n", 2, "virtual-packages.__cuda", "contains spaces"),
        ("dependencies:\n  - other: [x]\n", 2, "dependencies", "unknown dependency section 'other'"),
        ("dependencies:\n  - {a: 1, b: 2}\n", 2, "dependencies", "a dependency must be a MatchSpec string"),
        ("dependencies:\n  - [a]\n", 2, "dependencies", "a dependency must be a MatchSpec string"),
        ("pip-repositories: ['ftp://x']\n", 1, "pip-repositories", "is not an http(s) URL"),
    ],
)
def test_structure_errors(text: str, line: int, field: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_environment_yaml(text, source="env.yml")
    assert (info.value.file, info.value.line, info.value.field) == ("env.yml", line, field)
    assert message in info.value.message


def test_misspelled_key_suggestion() -> None:
    with pytest.raises(SpecError) as info:
        parse_environment_yaml("name: x\nchannels: [conda-forge]\ndependecies:\n  - numpy\n", source="env.yml")
    assert info.value.one_line() == (
        "env.yml:3: dependecies: unknown key 'dependecies' (hint: did you mean 'dependencies'?)"
    )
    with pytest.raises(SpecError) as info:
        parse_environment_yaml("zzz: 1\n")
    assert info.value.hint is not None and info.value.hint.startswith("known keys: allow-pypi-requests")


def test_undefined_variable_names_variable_and_channel() -> None:
    text = "channels:\n  - conda-forge\n  - https://repo.example.com/t/$TOKEN/channel\n"
    with pytest.raises(SpecError) as info:
        parse_environment_yaml(text, source="env.yml", environ={"OTHER": "1"})
    assert info.value.one_line() == (
        "env.yml:3: channels: environment variable 'TOKEN' used in 'https://repo.example.com/t/$TOKEN/channel'"
        " is not set (hint: set TOKEN in the environment of the build)"
    )
    spec = parse_environment_yaml(text, environ={"TOKEN": "abc"})
    assert spec.channels == ("conda-forge", "https://repo.example.com/t/abc/channel")
    assert dict(spec.channel_env_vars) == {"https://repo.example.com/t/abc/channel": ("TOKEN",)}
    assert spec.raw_channels == ("conda-forge", "https://repo.example.com/t/$TOKEN/channel")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("name: x\ndependencies:\n  - numpy\n - scipy\n", 4, "invalid YAML"),
        ("dependencies: [a, b\n", 2, "invalid YAML: expected ',' or ']'"),
        ("name: x\n\tchannels: []\n", 2, "found character '\\t'"),
        ("name: 'x\n", 2, "invalid YAML"),
    ],
)
def test_yaml_syntax_error_line(text: str, line: int, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_environment_yaml(text, source="env.yml")
    assert info.value.line == line
    assert message in info.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty spec"), ("# nothing\n", "empty spec"), ("~\n", "empty spec"), ("- a\n", "must be a YAML mapping")],
)
def test_empty_and_non_mapping(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_environment_yaml(text, source="env.yml")
    assert message in info.value.message and info.value.file == "env.yml"


def test_jinja_recipe_is_not_a_spec() -> None:
    with pytest.raises(SpecError) as info:
        read_spec(_shared("fixtures", "conda-lock", "tests", "test-recipe", "meta.yaml"))
    assert info.value.line == 1 and info.value.hint == "this looks like a Jinja recipe, not an environment.yml"


# ---------------------------------------------------------------------------------------------
# pip sections and requirements files


@pytest.mark.parametrize(
    "line",
    [
        "-e .",
        "-e git+https://github.com/openai/CLIP.git@main#egg=clip",
        "--editable=git+https://github.com/neithere/argh.git#egg=argh",
        ".",
        "./module_to_install",
        "../sibling",
        "/abs/path/pkg",
        "~/pkg",
        "file:///tmp/pkg",
        "pkg @ file:///tmp/pkg",
        "pkg @ git+file:///tmp/repo",
        "./dist/pkg-1.0-py3-none-any.whl",
        "-f ./wheels",
    ],
)
def test_editable_and_local_pip_requirements_rejected(line: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_environment_yaml(f"dependencies:\n  - pip\n  - pip:\n    - requests\n    - '{line}'\n", source="e.yml")
    err = info.value
    assert (err.line, err.field) == (5, "pip")
    assert err.message.startswith(LOCAL)
    assert err.hint == "publish the package to an index or add it as a wheel URL"


@pytest.mark.parametrize(
    ("line", "message", "hint"),
    [
        ("numpy=1.26", "invalid pip requirement 'numpy=1.26'", "pip uses '==' for exact versions"),
        ("-c constraints.txt", "pip option -c is not supported", None),
        ("--no-binary=:all:", "unsupported pip option '--no-binary'", None),
        ("--index-url", "pip option --index-url needs a value", None),
        ("--index-url ftp://x", "--index-url must be an http(s) URL", None),
        ("https://x.org/pkg.tar.bz2", "has no package name", "write it as 'pkg.tar.bz2 @ "),
        ("requests --no-deps", "unsupported option '--no-deps'", None),
        ("-r https://x.org/r.txt", "remote requirements files are not supported", None),
        ("-r reqs.txt", "cannot resolve '-r reqs.txt' without the spec's file path", None),
        ("--index-url ${INDEX}", "environment variable 'INDEX'", None),
    ],
)
def test_bad_pip_lines(line: str, message: str, hint: str | None) -> None:
    with pytest.raises(SpecError) as info:
        parse_environment_yaml(f"dependencies:\n  - pip:\n    - '{line}'\n")
    assert (info.value.line, info.value.field) == (3, "pip")
    assert message in info.value.message
    if hint:
        assert info.value.hint is not None and info.value.hint.startswith(hint)


def test_pip_section_options_and_url_forms() -> None:
    spec = parse_environment_yaml(
        "dependencies:\n"
        "  - python\n"
        "  - pip:\n"
        "    - --pre --index-url https://a.org/simple --extra-index-url=https://b.org/simple\n"
        "    - -i https://c.org/simple\n"
        "    - --find-links https://d.org/links --trusted-host d.org\n"
        "    - --extra-index-url ${EXTRA}\n"
        "    - https://x.org/typing_extensions-4.8.0-py3-none-any.whl\n"
        "    - https://x.org/requests-2.31.0.tar.gz\n"
        "    - git+https://github.com/neithere/argh.git#egg=argh\n"
        "    - argh2 @ git+https://github.com/neithere/argh.git@v1\n"
        '    - requests[socks] >=2 ; python_version >= "3.8"\n',
        environ={"EXTRA": "https://e.org/simple"},
    )
    assert spec.pip is not None
    assert spec.pip.index_url == "https://c.org/simple"  # the last one wins, as in pip
    assert spec.pip.extra_index_urls == ("https://b.org/simple", "https://e.org/simple")
    assert spec.pip.find_links == ("https://d.org/links",)
    assert spec.pip_requirements("linux-64") == (
        "typing-extensions @ https://x.org/typing_extensions-4.8.0-py3-none-any.whl",
        "requests @ https://x.org/requests-2.31.0.tar.gz",
        "argh @ git+https://github.com/neithere/argh.git#egg=argh",
        "argh2 @ git+https://github.com/neithere/argh.git@v1",
        'requests[socks] >=2 ; python_version >= "3.8"',
    )
    assert [r.line for r in spec.pip.requirements] == [8, 9, 10, 11, 12]


def test_requirements_txt(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.txt").write_text("six  # trailing comment\n-r deeper.txt\n")
    (tmp_path / "sub" / "deeper.txt").write_text("idna>=3\n")
    (tmp_path / "requirements.txt").write_text(
        "# pinned for CI\n"
        "--index-url https://pypi.example.org/simple\n"
        "-f https://wheels.example.org/\n"
        "requests>=2.31 \\\n"
        '    ; python_version >= "3.8"\n'
        "\n"
        "flit-core===3.9.0 --hash=sha256:abcd --hash sha256:ef01\n"
        "-r sub/more.txt\n"
        "--pre\n"
    )
    spec = read_spec(tmp_path / "requirements.txt")
    assert (spec.name, spec.channels, spec.dependencies) == (None, (), ())
    assert spec.pip is not None
    assert spec.pip.index_url == "https://pypi.example.org/simple"
    assert spec.pip.find_links == ("https://wheels.example.org/",)
    assert [(r.text, r.line) for r in spec.pip.requirements] == [
        ('requests>=2.31 ; python_version >= "3.8"', 4),
        ("flit-core===3.9.0", 7),
        ("six", 8),
        ("idna>=3", 8),
    ]
    (tmp_path / "loop.txt").write_text("-r loop.txt\n")
    with pytest.raises(SpecError) as info:
        read_spec(tmp_path / "loop.txt")
    assert "more than 5 deep" in info.value.message and info.value.line == 1
    (tmp_path / "missing.txt").write_text("numpy\n-r nope.txt\n")
    with pytest.raises(SpecError) as info:
        read_spec(tmp_path / "missing.txt")
    assert (info.value.file, info.value.line) == (str(tmp_path / "missing.txt"), 2)
    assert "file not found" in info.value.message


def test_includes_stay_inside_the_spec_directory(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("root:x:0:0\n")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "env.yml").write_text("dependencies:\n  - pip:\n    - -r ../secret.txt\n")
    with pytest.raises(SpecError) as info:
        read_spec(tmp_path / "project" / "env.yml")
    assert (info.value.line, info.value.field) == (3, "pip")
    assert "outside the spec's directory" in info.value.message and "root:x" not in info.value.one_line()


def test_requirements_txt_errors_name_the_included_file(tmp_path: Path) -> None:
    (tmp_path / "inc.txt").write_text("ok\n-e .\n")
    with pytest.raises(SpecError) as info:
        parse_requirements_txt("numpy\n-r inc.txt\n", source=str(tmp_path / "reqs.txt"), allow_includes=True)
    assert (info.value.file, info.value.line) == (str(tmp_path / "inc.txt"), 2)
    assert info.value.message.startswith(LOCAL)


# ---------------------------------------------------------------------------------------------
# The EnvironmentSpec value


DEMO = """\
name: demo
channels: [conda-forge, nodefaults]
platforms: [linux-64, osx-arm64]
variables: {CONDA_OVERRIDE_CUDA: 12.10, FLAG: true}
virtual-packages:
  __cuda: 12.4
  __archspec: 1 x86_64_v3
dependencies:
  - python >= 3.11
  - zlib
  - cudatoolkit  # [linux64]
  - pip:
    - tabulate
    - psutil  # [osx]
"""


def test_spec_value_semantics() -> None:
    spec = parse_environment_yaml(DEMO, source="demo.yml")
    assert dict(spec.variables) == {"CONDA_OVERRIDE_CUDA": "12.10", "FLAG": "true"}
    assert dict(spec.virtual_packages) == {"__cuda": "12.4", "__archspec": "1 x86_64_v3"}
    assert isinstance(spec.variables, Mapping) and not isinstance(spec.variables, dict)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.variables["X"] = "1"  # type: ignore[index]
    assert hash(spec) == hash(parse_environment_yaml(DEMO, source="demo.yml"))
    assert spec == parse_environment_yaml(DEMO, source="demo.yml")


def test_canonical_form() -> None:
    spec = parse_environment_yaml(DEMO, source="demo.yml")
    canonical = spec.canonical()
    assert canonical == {
        "name": "demo",
        "channels": ["conda-forge"],
        "nodefaults": True,
        "dependencies": [
            {"spec": "cudatoolkit", "selector": "linux64"},
            {"spec": "python >=3.11", "selector": None},
            {"spec": "zlib", "selector": None},
        ],
        "pip": {
            "requirements": [{"text": "psutil", "selector": "osx"}, {"text": "tabulate", "selector": None}],
            "index_url": None,
            "extra_index_urls": [],
            "find_links": [],
        },
        "platforms": ["linux-64", "osx-arm64"],
        "variables": {"CONDA_OVERRIDE_CUDA": "12.10", "FLAG": "true"},
        "virtual_packages": {"__archspec": "1 x86_64_v3", "__cuda": "12.4"},
    }
    reordered = DEMO.replace("  - python >= 3.11\n  - zlib\n", "\n\n  - zlib\n  - python   >=3.11\n")
    other = parse_environment_yaml(reordered, source="elsewhere.yml")
    assert other.dependencies != spec.dependencies  # lines and order differ ...
    assert other.canonical() == canonical  # ... the hash input does not
    swapped = DEMO.replace("[conda-forge, nodefaults]", "[bioconda, conda-forge]")
    assert parse_environment_yaml(swapped).canonical()["channels"] == ["bioconda", "conda-forge"]
    assert spec.canonical("osx-arm64")["dependencies"] == ["python >=3.11", "zlib"]
    assert spec.canonical("osx-arm64")["pip"]["requirements"] == ["psutil", "tabulate"]
    assert spec.canonical("linux-64")["pip"]["requirements"] == ["tabulate"]


def test_platform_argument_is_validated() -> None:
    spec = parse_environment_yaml(DEMO, source="demo.yml")
    with pytest.raises(SpecError) as info:
        spec.conda_specs("linux64")
    assert info.value.hint == "did you mean 'linux-64'?" and info.value.file == "demo.yml"
    assert spec.conda_specs("linux-64") == ("python >=3.11", "zlib", "cudatoolkit")
    assert spec.pip_requirements("osx-arm64") == ("tabulate", "psutil")
    assert EnvironmentSpec(name=None, channels=(), dependencies=()).pip_requirements("win-64") == ()


# ---------------------------------------------------------------------------------------------
# JSON schema and examples


def _schema() -> dict[str, object]:
    return dict(json.loads(SCHEMA.read_text()))


def test_schema_keys_match_the_parser() -> None:
    schema = _schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    properties = schema["properties"]
    assert isinstance(properties, dict)
    assert set(properties) == set(TOP_LEVEL_KEYS)
    assert properties["platforms"]["items"]["enum"] == list(KNOWN_PLATFORMS)
    assert schema["additionalProperties"] is False


def _validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(_schema())
    return jsonschema.Draft202012Validator(_schema())


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yml")), ids=lambda p: p.name)
def test_examples_parse_and_validate(path: Path) -> None:
    spec = read_spec(path)
    assert spec.channels and spec.dependencies
    assert list(_validator().iter_errors(yaml.safe_load(path.read_text()))) == []


def test_example_contents() -> None:
    science = read_spec(EXAMPLES / "datascience.yml")
    names = [rattler.MatchSpec(s, strict=False).name.normalized for s in science.conda_specs("linux-64")]
    assert names == ["python", "numpy", "pandas", "scipy", "scikit-learn", "matplotlib", "jupyterlab"]
    assert science.channels == ("conda-forge",) and science.pip is None
    cuda = read_spec(EXAMPLES / "cuda-ml.yml")
    assert dict(cuda.variables) == {"CONDA_OVERRIDE_CUDA": "12.4"} and cuda.platforms == ("linux-64",)
    jaxlib = next(s for s in cuda.conda_specs("linux-64") if s.startswith("jaxlib"))
    assert rattler.MatchSpec(jaxlib, strict=False).build == "cuda12*"


@pytest.mark.parametrize("path", _params([p for p in _spec_files() if p.suffix != ".txt"]))
def test_schema_agrees_with_parser_on_real_files(path: Path) -> None:
    """YAML files the parser accepts validate; files rejected for their keys do not."""
    validator = _validator()
    errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
    expected = EXPECTED_FAILURES.get(_rel(path))
    if expected is None:
        assert errors == [], [e.message for e in errors]
    elif "unknown key" in expected[2]:
        assert any("Additional properties" in e.message for e in errors)


def test_schema_rejects_editable_pip_and_accepts_sel() -> None:
    validator = _validator()
    assert not validator.is_valid({"dependencies": [{"pip": ["-e ."]}]})
    assert not validator.is_valid({"dependencies": [{"pipx": ["a"]}]})
    assert not validator.is_valid({"platforms": ["linux64"]})
    assert not validator.is_valid({"virtual-packages": {"cuda": "12"}})
    assert validator.is_valid(
        {
            "dependencies": ["zlib", {"sel(linux)": "cudatoolkit"}, {"pip": ["requests", {"sel(win)": "pywin32"}]}],
            "virtual-packages": {"__cuda": "12.4"},
            "variables": {"A": 1, "B": "x"},
        }
    )
