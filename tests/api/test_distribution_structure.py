"""The arrow between the API and the OCI client runs one way: ``envyard.registry`` (the client) never imports
``envyard.api``; the API uses the client only to publish; the ``/v2/`` routes hold no SQL (their queries are
in ``envyard.api.distribution.service``)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"envyard.registry": REPO / "registry", "envyard.api": REPO / "api"}
ROUTES = REPO / "api" / "distribution" / "routes.py"


def _modules(package: str) -> dict[str, Path]:
    root = ROOTS[package]
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if "migrations" in parts:
            continue
        name = ".".join((package, *parts[:-1], *(() if parts[-1] == "__init__" else (parts[-1],))))
        found[name] = path
    return found


def _imports(module: str, path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports too), relative ones resolved."""
    names = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names.add(stem)
            names.update(f"{stem}.{alias.name}" for alias in node.names)
    return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_registry_package_never_imports_the_api():
    modules = _modules("envyard.registry")
    assert "envyard.registry.client" in modules and "envyard.registry.push" in modules
    offenders = {module: sorted(n for n in _imports(module, path) if _within(n, "envyard.api"))
                 for module, path in modules.items()}
    assert {m: names for m, names in offenders.items() if names} == {}


def test_the_registry_package_is_the_client_only():
    assert not (REPO / "registry" / "server.py").exists() and not (REPO / "registry" / "token_auth.py").exists()
    for path in (REPO / "registry").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        imported = _imports("envyard.registry", path)
        assert not any(_within(n, "fastapi") or _within(n, "sqlmodel") or _within(n, "sqlalchemy")
                       for n in imported), path
        assert not any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                       and node.func.attr in {"get", "api_route", "include_router"}
                       and isinstance(node.func.value, ast.Name) and node.func.value.id == "router"
                       for node in ast.walk(tree)), path


def test_the_api_uses_the_registry_client_only_to_publish():
    users = {module for module, path in _modules("envyard.api").items()
             if any(_within(n, "envyard.registry") for n in _imports(module, path))}
    assert set(users) == {"envyard.api.services.publish"}


def test_the_distribution_routes_hold_no_sql():
    source = ROUTES.read_text()
    assert "select(" not in source and "session.exec" not in source and "session.execute" not in source
    tree = ast.parse(source, str(ROUTES))
    sql = {"select", "func", "bindparam", "col", "text", "aliased"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in {"sqlmodel",
                                                                                             "sqlalchemy"}:
            assert not {alias.name for alias in node.names} & sql, ast.unparse(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = node.func.value
            assert not (isinstance(receiver, ast.Name) and receiver.id == "session"), ast.unparse(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in sql, ast.unparse(node)


def test_the_distribution_package_states_its_names():
    import envyard.api.distribution as distribution
    from envyard.api.distribution import access, references, routes, service

    for module in (distribution, access, references, routes, service):
        assert module.__all__ and all(hasattr(module, name) for name in module.__all__), module.__name__
    assert distribution.router is routes.router
    paths = {route.path for route in routes.router.routes}  # type: ignore[attr-defined]
    assert {"/v2/token", "/v2/", "/v2/{name:path}/manifests/{reference}", "/v2/{name:path}/blobs/{digest}",
            "/v2/{name:path}/tags/list", "/v2/{name:path}/referrers/{digest}"} == paths
