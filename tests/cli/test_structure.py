"""The CLI's shape, read from the source with ``ast``: ``envyard.cli`` alone registers commands; a command module
imports the CLI's shared modules (context, output, follow) and the packages below, never another command module
nor another module's private name; ``envyard.api`` imports nothing of the worker or the CLI; no import circles
inside ``cli/``."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "cli"
COMMANDS = CLI / "commands"
#: what a command module may import from envyard
COMMAND_MAY_IMPORT = ("envyard.cli.context", "envyard.cli.output", "envyard.cli.follow", "envyard.api",
                      "envyard.worker", "envyard.registry", "envyard.builder")
REGISTERING = ("add_command", "add_group")


def module_name(path: Path) -> str:
    """``cli/commands/lock.py`` -> ``envyard.cli.commands.lock`` (the folders install under ``envyard``)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["envyard", *parts])


def imports(path: Path) -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None, line) of every import in ``path``, also those inside functions and
    ``if TYPE_CHECKING:``; relative imports resolved against the module's package."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> Iterator[tuple[str, str | None, int]]:
    """:func:`imports` of ``source``, a module of ``package``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                yield base, alias.name, node.lineno


def python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


COMMAND_MODULES = sorted(p for p in COMMANDS.glob("*.py") if p.name != "__init__.py")


def test_the_commands_are_the_issues_list_and_more() -> None:
    names = {p.stem for p in COMMAND_MODULES}
    assert names >= {"lock", "image", "install", "pack", "env", "build", "namespace", "target", "gc", "serve",
                     "worker", "channel", "why"}, names


def test_only_the_cli_package_registers_commands() -> None:
    """``cli.add_command`` appears in ``cli/__init__.py`` only: importing a module adds nothing to a group."""
    offenders = []
    for path in python_files(CLI):
        if path == CLI / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in REGISTERING:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
    root = ast.parse((CLI / "__init__.py").read_text())
    registered = [node for node in ast.walk(root) if isinstance(node, ast.Call)
                  and isinstance(node.func, ast.Attribute) and node.func.attr == "add_command"]
    assert len(registered) >= len(COMMAND_MODULES)


def test_every_command_module_is_registered() -> None:
    """Each command module's groups and commands are attached to the root group."""
    import click

    from envyard.cli import cli

    reachable = set()
    todo: list[click.Command] = [cli]
    while todo:
        command = todo.pop()
        reachable.add(id(command))
        if isinstance(command, click.Group):
            todo.extend(command.commands.values())
    for path in COMMAND_MODULES:
        module = importlib.import_module(module_name(path))
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, click.Command):
                assert id(value) in reachable, f"{module.__name__}.{name} is not registered"


def command_import_violations(found: Iterator[tuple[str, str | None, int]]) -> list[str]:
    """The imports a command module may not make: another command module, or envyard outside
    :data:`COMMAND_MAY_IMPORT`."""
    wrong = []
    for module, name, line in found:
        full = f"{module}.{name}" if name else module
        if module.split(".")[0] != "envyard":
            continue
        if full.startswith("envyard.cli.commands") or module.startswith("envyard.cli.commands"):
            wrong.append(f"{line}: {full}: a command module imports another")
        elif not module.startswith(COMMAND_MAY_IMPORT) or module == "envyard.cli":
            wrong.append(f"{line}: {full}: not one of {', '.join(COMMAND_MAY_IMPORT)}")
    return wrong


def private_imports(found: Iterator[tuple[str, str | None, int]]) -> list[str]:
    """Imports of envyard modules or names that start with ``_`` (dunders aside)."""
    wrong = []
    for module, name, line in found:
        if module.split(".")[0] != "envyard":
            continue
        if any(part.startswith("_") and not (part.startswith("__") and part.endswith("__"))
               for part in [*module.split("."), name or ""]):
            wrong.append(f"{line}: {module}.{name}")
    return wrong


@pytest.mark.parametrize("path", COMMAND_MODULES, ids=lambda p: p.stem)
def test_a_command_module_imports_only_the_shared_modules_and_the_packages_below(path: Path) -> None:
    assert command_import_violations(imports(path)) == []


@pytest.mark.parametrize("path", python_files(CLI), ids=lambda p: str(p.relative_to(CLI)))
def test_no_private_name_is_imported_from_another_module(path: Path) -> None:
    assert private_imports(imports(path)) == []


#: What the API may take from the worker package: the models of the protocol they speak over HTTP and the worker's
#: settings its own extend; never the runner (starting workers beside the API is ``envyard serve``'s job, cli/).
WORKER_MODULES_FOR_THE_API = ("envyard.worker.protocol", "envyard.worker.settings")


def test_the_api_imports_nothing_of_the_worker_or_the_cli() -> None:
    """The API talks to workers over HTTP; starting workers beside it is ``envyard serve``'s job (cli/)."""
    found = [f"{path.relative_to(REPO)}:{line}: {module}" + (f".{name}" if name else "")
             for path in python_files(REPO / "api") for module, name, line in imports(path)
             if (module.startswith(("envyard.worker", "envyard.cli")) and not module.startswith(
                 WORKER_MODULES_FOR_THE_API)) or (module == "envyard" and name in ("worker", "cli"))]
    assert found == []


def test_no_import_circle_inside_the_cli() -> None:
    """The graph of module-level and deferred imports between ``envyard.cli`` modules has no cycle."""
    modules = {module_name(path): path for path in python_files(CLI)}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for module, imported, _ in imports(path):
            for candidate in (f"{module}.{imported}" if imported else module, module):
                if candidate in modules and candidate != name:
                    targets.add(candidate)
                    break
        graph[name] = targets
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            raise AssertionError("import circle: " + " -> ".join([*stack[stack.index(node):], node]))
        if node in done:
            return
        for target in sorted(graph[node]):
            visit(target, [*stack, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    assert "envyard.cli.commands.lock" in graph["envyard.cli"]  # the graph is not empty by accident


def test_the_checks_see_the_violations_they_look_for() -> None:
    """A command module that imported a sibling (absolutely, relatively, or deferred inside a function), the root
    package, or a private name would fail the checks above."""
    source = ("import click\n"
              "from envyard.cli.output import emit\n"
              "from envyard.api.settings import ServiceSettings\n"
              "def f():\n"
              "    from envyard.cli.commands.env import env_group\n"
              "    from . import lock\n"
              "    from ..follow import _stream\n"
              "    import envyard.cli\n")
    found = list(imports_in(source, "envyard.cli.commands"))
    assert ("envyard.cli.commands", "lock", 6) in found and ("envyard.cli.follow", "_stream", 7) in found
    assert [v.split(":")[0] for v in command_import_violations(iter(found))] == ["5", "6", "8"]
    assert private_imports(iter(found)) == ["7: envyard.cli.follow._stream"]
