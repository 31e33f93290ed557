"""Rules of the source the suite checks: configuration only through the settings objects, a worker that imports
nothing of the API, one logging setup, logger names from ``__name__``, and packages that state their public names."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("builder", "api", "worker", "registry", "cli")
#: The settings modules: the only ones that turn ENVYARD_* variables into values.
SETTINGS_MODULES = {"builder/settings.py", "worker/settings.py", "api/settings.py"}
#: Reads of the process environment outside the settings modules, each with its reason. A key is a variable name
#: (read wherever) or ``path:*`` (the whole environment, in that file).
ENVIRONMENT_READS = {
    "worker/runner.py:*": "the worker passes its environment to the child environment builder and the sandbox, which "
    "keep an allow-list of it (worker.sandbox.child_environment) and bind PYTHONPATH and certificate paths",
    "builder/pip_resolve.py:*": "pip runs as a subprocess with the caller's environment (or the one given), cleaned",
    "cli/commands/namespace.py:*": "envyard namespace secret set --from-env VAR reads the one variable the user "
    "names (so the value is not on the command line)",
    "cli/commands/lock.py:*": "envyard lock expands ${VAR} in the user's own spec from the user's environment (the "
    "service never does: environ={})",
    "cli/commands/ci.py:*": "envyard ci expands ${VAR} in the user's own specs from the user's environment (as "
    "envyard lock does)",
    "SSL_CERT_FILE": "the standard variable naming TLS roots, honoured as every TLS client does (S3 store)",
    "SOURCE_DATE_EPOCH": "the reproducible-builds convention (reproducible-builds.org), not an envyard setting",
    "DOCKER_HOST": "docker's own variable for its daemon's address (image load)",
    # The CLI's own options, read by click before any settings object exists.
    "ENVYARD_DEBUG": "the CLI shows the traceback of an internal error (read before a settings object exists)",
    "ENVYARD_DATA_DIR": "the CLI finds a local server's admin token (read before a settings object exists)",
    "ENVYARD_API_URL": "the CLI's --api option (a click envvar of the CLI)",
    "ENVYARD_TOKEN": "the CLI's --token option (a click envvar of the CLI)",
    "ENVYARD_REGISTRY_USERNAME": "envyard image push --username (a click envvar of the CLI)",
    "ENVYARD_REGISTRY_PASSWORD": "envyard image push --password (a click envvar of the CLI)",
}
#: Modules whose own logger still has a literal name (``log = logging.getLogger("...")``).
LITERAL_LOGGERS: dict[str, str] = {}


def sources() -> Iterator[tuple[str, ast.Module]]:
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if "/migrations/" not in relative:
                yield relative, ast.parse(path.read_text(encoding="utf-8"), relative)


def environment_reads(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, variable name or "*") of each read of the environment: ``os.environ`` (subscripted or ``.get``
    with a literal name, else the whole of it), ``os.getenv``, ``from os import environ``, click's ``envvar=``."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os" and \
                {a.name for a in node.names} & {"environ", "getenv", "environb"}:
            yield node.lineno, "*"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                and node.attr in ("environ", "getenv", "environb"):
            parent = parents.get(node)
            name = "*"
            if isinstance(parent, ast.Subscript) and isinstance(parent.slice, ast.Constant):
                name = str(parent.slice.value)
            elif isinstance(parent, ast.Attribute) and parent.attr == "get":
                call = parents.get(parent)
                if isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.Constant):
                    name = str(call.args[0].value)
            elif isinstance(parent, ast.Call) and node.attr == "getenv" and parent.args \
                    and isinstance(parent.args[0], ast.Constant):
                name = str(parent.args[0].value)
            yield node.lineno, name
        elif isinstance(node, ast.keyword) and node.arg in ("envvar", "auto_envvar_prefix"):
            values = node.value.elts if isinstance(node.value, ast.List | ast.Tuple) else [node.value]
            for value in values:
                yield node.value.lineno, str(value.value) if isinstance(value, ast.Constant) else "*"


def test_settings_are_read_only_through_the_settings_objects() -> None:
    unexplained = [f"{path}:{line}: {name}" for path, tree in sources() if path not in SETTINGS_MODULES
                   for line, name in environment_reads(tree)
                   if name not in ENVIRONMENT_READS and f"{path}:{name}" not in ENVIRONMENT_READS]
    assert unexplained == [], "read the setting through a settings object (or list the exception with its reason)"


def test_the_environment_scan_finds_reads() -> None:
    tree = ast.parse("import os\nfrom os import getenv\nos.environ['A']\nos.environ.get('B')\nos.getenv('C')\n"
                     "dict(os.environ)\nclick.option('--x', envvar='D')\n")
    assert sorted(name for _, name in environment_reads(tree)) == ["*", "*", "A", "B", "C", "D"]


def test_the_worker_imports_nothing_of_the_api() -> None:
    named = [f"{path}:{node.lineno}" for path, tree in sources() if path.startswith("worker/")
             for node in ast.walk(tree)
             if isinstance(node, ast.Import | ast.ImportFrom) and any(
                 (name or "").startswith("envyard.api")
                 for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]))]
    assert named == []
    mentioned = [path for path, _ in sources() if path.startswith("worker/")
                 and "envyard.api" in (REPO / path).read_text(encoding="utf-8")]
    assert mentioned == []
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, pkgutil, importlib, envyard.worker as w\n"
         "for m in pkgutil.walk_packages(w.__path__, 'envyard.worker.'): importlib.import_module(m.name)\n"
         "print(sorted(n for n in sys.modules if n.startswith('envyard.api')))"],
        capture_output=True, text=True, check=True, cwd=REPO)
    assert loaded.stdout.strip() == "[]"  # not even through another package


def test_logging_is_configured_in_one_place() -> None:
    """``configure_logging(level)``, used by ``envyard serve`` and ``envyard worker``."""
    calls = [(path, function.name) for path, tree in sources() for function in ast.walk(tree)
             if isinstance(function, ast.FunctionDef) for node in ast.walk(function)
             if isinstance(node, ast.Attribute) and node.attr == "basicConfig"]
    anywhere = [path for path, tree in sources() for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and node.attr == "basicConfig"]
    assert len(anywhere) == 1 and [name for _, name in calls] == ["configure_logging"], (anywhere, calls)


def test_module_loggers_are_named_by_their_module() -> None:
    literal = [f"{path}:{node.lineno}" for path, tree in sources() if path not in LITERAL_LOGGERS
               for node in tree.body
               if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
               and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "getLogger"
               and not (node.value.args and isinstance(node.value.args[0], ast.Name)
                        and node.value.args[0].id == "__name__")]
    assert literal == [], "log = logging.getLogger(__name__)"


PACKAGES = ["envyard.builder", "envyard.builder.lockfiles", "envyard.builder.oci", "envyard.api",
            "envyard.api.routers", "envyard.api.services", "envyard.api.storage", "envyard.worker",
            "envyard.registry"]


@pytest.mark.parametrize("name", PACKAGES)
def test_each_package_states_its_public_names(name: str) -> None:
    package = importlib.import_module(name)
    public = getattr(package, "__all__", None)
    assert public is not None, f"{name} has no __all__"
    assert list(public) == sorted(set(public), key=list(public).index), "no name twice"
    for item in public:  # each is an attribute or a module of the package
        assert hasattr(package, item) or importlib.util.find_spec(f"{name}.{item}") is not None, item
    modules = {m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")} - {"__main__"}
    if set(public) <= modules:  # a package of modules lists them all (a facade like lockfiles lists its API)
        assert sorted(modules - set(public)) == [], f"{name}.__all__ misses modules"
