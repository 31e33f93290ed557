"""The session and transaction rule, checked on the source with ``ast``.

* Only ``api/deps.py`` reads the application's state (``app.state``, ``request.app.state``): routers, services,
  the auth package and the resource dependencies get the engine, the store, the settings and the token cache as
  parameters (``EngineDep``, ``StoreDep``, ... in api/deps.py).
* A function that receives a ``Session`` never calls ``.commit()``: the route that called it commits (routers take
  ``SessionDep``); what needs several transactions takes an engine and opens ``session_scope`` per step.
* Sessions are constructed (``Session(...)``) only in api/deps.py (the request's session) and in ``session_scope``
  (api/db.py).

Scanned: the product packages (api, registry, worker, builder, cli). The tests are not scanned: their helpers and
fixtures open sessions of their own to set up and inspect the database, as do the migrations' tests.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "registry", "worker", "builder", "cli")
DEPS = Path("api/deps.py")
# Code that moves in this same issue and takes the rule with it when it moves: ``envyard serve`` (to
# cli/commands/serve.py, then reading the admin token through envyard.api.deps.app_state) and the /v2/ token
# route (to api/distribution/, then taking envyard.api.deps.get_secret_key). Empty this once they have moved.
SESSION_MAKERS = {Path("api/deps.py"): {"get_session"}, Path("api/db.py"): {"session_scope"}}


def sources() -> Iterator[tuple[Path, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO)
            yield relative, ast.parse(path.read_text(), filename=str(relative))


def state_reads(tree: ast.AST) -> list[int]:
    """Lines that touch ``<...>.app.state`` or ``app.state``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "state":
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id == "app") or (
                    isinstance(owner, ast.Attribute) and owner.attr == "app"):
                lines.append(node.lineno)
    return lines


def _annotation_names(annotation: ast.expr | None) -> set[str]:
    if annotation is None:
        return set()
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):  # a string annotation
        annotation = ast.parse(annotation.value, mode="eval").body
    return {n.id for n in ast.walk(annotation) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(annotation) if isinstance(n, ast.Attribute)}


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def committing_session_takers(tree: ast.AST) -> list[str]:
    """Functions with a parameter annotated ``Session`` whose body calls ``.commit()``."""
    found = []
    for function in _functions(tree):
        arguments = [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs]
        if not any("Session" in _annotation_names(a.annotation) for a in arguments):
            continue
        for node in ast.walk(function):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "commit"):
                found.append(f"{function.name} (line {node.lineno})")
    return found


def session_constructions(tree: ast.AST) -> list[tuple[str, int]]:
    """(enclosing function, line) of each ``Session(...)`` call."""
    found = []
    for function in _functions(tree):
        for node in ast.walk(function):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Session":
                found.append((function.name, node.lineno))
    for node in tree.body if isinstance(tree, ast.Module) else []:  # module level
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for call in ast.walk(node):
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Session":
                    found.append(("<module>", call.lineno))
    return found


def test_only_deps_reads_the_application_state():
    offenders = {str(path): lines for path, tree in sources()
                 if path != DEPS and (lines := state_reads(tree))}
    assert offenders == {}, "read app.state through envyard.api.deps (EngineDep, StoreDep, ...), not directly"


def test_a_function_that_takes_a_session_never_commits():
    offenders = {str(path): found for path, tree in sources() if (found := committing_session_takers(tree))}
    assert offenders == {}, ("the route commits (or, for several transactions, take an engine and open "
                             "envyard.api.db.session_scope per step)")


def test_sessions_are_made_only_by_deps_and_session_scope():
    offenders = {}
    for path, tree in sources():
        allowed = SESSION_MAKERS.get(path, set())
        made = [(name, line) for name, line in session_constructions(tree) if name not in allowed]
        if made:
            offenders[str(path)] = made
    assert offenders == {}, "take SessionDep in a route, or open envyard.api.db.session_scope(engine)"


def test_the_checks_find_what_they_look_for():
    """The checks above would see a violation (they are not vacuous)."""
    bad = ast.parse(
        "def service(session: Session, x: int) -> None:\n"
        "    session.add(x)\n"
        "    session.commit()\n"
        "def quoted(session: 'Session') -> None:\n"
        "    session.commit()\n"
        "def route(request: Request) -> None:\n"
        "    engine = request.app.state.engine\n"
        "    with Session(engine) as session:\n"
        "        pass\n"
        "def thread(app: FastAPI) -> None:\n"
        "    app.state.store.stat('x')\n"
    )
    assert committing_session_takers(bad) == ["service (line 3)", "quoted (line 5)"]
    assert state_reads(bad) == [7, 11]
    assert session_constructions(bad) == [("route", 8)]
    good = ast.parse(
        "def route(session: SessionDep) -> None:\n"
        "    session.commit()\n"
        "def service(engine: Engine) -> None:\n"
        "    with session_scope(engine) as session:\n"
        "        session.add(1)\n"
    )
    assert committing_session_takers(good) == [] and state_reads(good) == [] and session_constructions(good) == []
