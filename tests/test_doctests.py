"""The ``>>>`` examples of envyard's modules, imported by their installed names (``envyard.builder.…``).

pytest's ``--doctest-modules`` over a folder would import ``builder/x.py`` as ``builder.x`` beside the
``envyard.builder.x`` the code imports: two copies of every class, so ``except EnvyardError`` could miss.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path

import pytest

import envyard.api
import envyard.builder
import envyard.cli
import envyard.registry
import envyard.worker

PACKAGES = (envyard.builder, envyard.api, envyard.worker, envyard.registry, envyard.cli)
REPO = Path(__file__).resolve().parents[1]


def _modules_with_examples() -> list[str]:
    names = []
    for package in PACKAGES:
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            spec = importlib.util.find_spec(info.name)
            if spec and spec.origin and spec.origin.endswith(".py") and ">>>" in Path(spec.origin).read_text():
                names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_there_are_examples_to_run() -> None:
    assert "envyard.builder.settings" in MODULES and len(MODULES) >= 5, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, result


def test_no_module_is_loaded_under_a_bare_folder_name() -> None:
    """Every module of envyard's folders came in as envyard.*: none is loaded a second time as ``builder.x``,
    ``api.x``, … (test modules under tests/ may carry such names: pytest names them by their folders)."""
    for name in MODULES:
        importlib.import_module(name)
    folders = tuple(str(REPO / folder) + "/" for folder in ("builder", "api", "worker", "registry", "cli"))
    twice = sorted(name for name, module in list(sys.modules.items()) if not name.startswith("envyard.")
                   and str(getattr(module, "__file__", "") or "").startswith(folders))
    assert twice == [], twice


def test_pytest_collects_no_package_folder_by_path() -> None:
    import tomllib

    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["testpaths"] == ["tests"] and "--doctest-modules" not in options["addopts"]
