"""The layers of docs/architecture.md, enforced: import-linter's contracts (pyproject.toml) and no import circle
between the modules of one package."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("envyard.builder", "envyard.api", "envyard.worker", "envyard.registry", "envyard.cli")


def test_import_linter_contracts_hold() -> None:
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                             "lint_imports_command()", "--config", str(REPO / "pyproject.toml"), "--no-cache"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def _cycle(modules: Iterable[str], edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle among ``modules`` (depth-first search), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)) is not None:
                return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(modules):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*ROOTS, include_external_packages=False, exclude_type_checking_imports=True)


@pytest.mark.parametrize("root", ROOTS)
def test_no_import_circle_inside_a_package(graph: grimp.ImportGraph, root: str) -> None:
    """Within each package (and its subpackages), module-level and function-level imports form no circle;
    a package's ``__init__`` re-exporting its modules does not count as importing them back."""
    packages = {m for m in graph.find_descendants(root) | {root} if graph.find_children(m)}
    for package in sorted(packages):
        members = {m for m in graph.find_children(package) if not graph.find_children(m)}  # modules, not packages
        edges = {m: {t for t in graph.find_modules_directly_imported_by(m) if t in members} for m in members}
        circle = _cycle(members, edges)
        assert circle is None, f"import circle in {package}: {' -> '.join(circle or [])}"
