"""The role × endpoint matrix: every operation of the API and of /v2/ (enumerated from the OpenAPI document the
app generates, so new routes are covered), asked by an admin, an editor and a viewer of namespace ``victim``
(through a group and a user binding), a signed-in stranger, and nobody, on the victim's existing resources.

Anonymous callers get 401 everywhere but the public routes; the stranger gets 403 or 404 and never a body that
names the victim's resources (listings included); the viewer reads what an admin reads and is refused (403) every
change; the editor reads everything and is refused (403) the namespace's administration. A real ``envyard serve``
on loopback, builds completed through the worker protocol (tests/service/oci_content.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from envyard.api.app import create_app
from envyard.api.settings import ServiceSettings
from tests.service.conftest import Service, start_service
from tests.service.oci_content import publish_two_namespaces

PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
#: served without a token: health, the documentation switch aside, sign-in, and the registry's token endpoint
PUBLIC = ("/healthz", "/readyz", "/api/v1/auth/", "/v2/token")
#: what only the namespace's administrators (or admin tokens) may do, beyond editing
NAMESPACE_ADMIN = ("/grants", "targets")


#: POSTs that only read (the generated Pod or Job for a run manifest sent as the body)
READ_POSTS = ("/kubernetes/pod", "/kubernetes/job")
#: writes whose target namespace is in the body (a viewer of the source may ask): the empty body is refused first
BODY_TARGETS = ("/promote",)
#: what only editors may read: the names of a namespace's secrets
EDITOR_READS = ("/secrets",)


def editor_level(template: str) -> bool:
    return template.startswith("/api/v1/namespaces/") and any(p in template for p in EDITOR_READS)


def admin_level(template: str) -> bool:
    return template.startswith("/api/v1/namespaces/") and any(p in template for p in NAMESPACE_ADMIN)
IDENTITIES = ("admin", "editor", "viewer", "stranger", "anonymous")


@dataclass
class World:
    service: Service
    tokens: dict[str, str | None]
    victim_digest: str
    victim_artifact: str
    binding_id: int
    token_ids: dict[str, int]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]) -> Iterator[World]:
    service = start_service(tmp_path_factory.mktemp("matrix"), service_env, "--workers", "0")
    try:
        with service.client() as admin:
            built = publish_two_namespaces(admin)
            assert [b["id"] for b in built] == [1, 2, 3]
            tokens: dict[str, str | None] = {"admin": service.token, "anonymous": None}
            token_ids: dict[str, int] = {}
            for identity, groups in (("editor", ["victims"]), ("viewer", []), ("stranger", [])):
                admin.post("/api/v1/admin/users", json={"name": identity, "groups": groups}).raise_for_status()
                created = admin.post("/api/v1/tokens", json={"name": identity, "user": identity}).json()
                tokens[identity], token_ids[identity] = created["token"], created["id"]
            admin.post("/api/v1/admin/bindings", json={"role": "editor", "pattern": "victim/*",
                                                       "subject_kind": "group", "subject": "victims"}
                       ).raise_for_status()
            binding = admin.post("/api/v1/admin/bindings", json={"role": "viewer", "pattern": "victim/*",
                                                                 "subject_kind": "user", "subject": "viewer"}).json()
            artifacts = admin.get("/api/v1/builds/2/artifacts").json()
            mine = {a["digest"] for a in admin.get("/api/v1/builds/3/artifacts").json()}
            digest = next(a["digest"] for a in artifacts if a["digest"] not in mine)
        yield World(service, tokens, digest, artifacts[0]["name"], binding["id"], token_ids)
    finally:
        service.stop()


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    schema = create_app(ServiceSettings(data_dir=tmp_path_factory.mktemp("route-table"))).openapi()
    found = [(method.upper(), path) for path, operations in schema["paths"].items() for method in operations]
    assert len(found) > 50
    return found


def fill(template: str, world: World) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "name":
            if template.startswith("/v2/"):
                return "victim/env"
            return world.victim_artifact if "/artifacts/" in template else ("t" if "targets" in template else "env")
        return {"build_id": "2", "other_id": "1", "token_id": str(world.token_ids["editor"]), "namespace": "victim",
                "digest": world.victim_digest, "reference": "2", "binding_id": str(world.binding_id),
                "snapshot_id": "1"}[name]

    return PARAM.sub(value, template)


def ask(world: World, identity: str, method: str, path: str) -> httpx.Response:
    token = world.tokens[identity]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=world.service.url, headers=headers, timeout=30.0) as http:
        return http.request(method, path, json={} if method in {"POST", "PUT", "PATCH"} else None)


def test_every_route_for_every_role(world: World, routes: list[tuple[str, str]]) -> None:
    checked = 0
    for method, template in routes:
        path = fill(template, world)
        public = template.startswith(PUBLIC)
        names_victim = "{" in template
        baseline = ask(world, "admin", method, path).status_code if method not in WRITES else None
        for identity in IDENTITIES:
            if identity in ("admin", "editor") and method in WRITES and not admin_level(template):
                continue  # allowed changes are exercised by their own tests; here they would wreck the fixture
            response = ask(world, identity, method, path)
            status = response.status_code
            where = f"{identity} {method} {template}: {status} {response.text[:200]}"
            checked += 1
            assert status < 500, where
            if public:
                continue
            if identity == "anonymous":
                assert status == 401, where
            elif identity == "stranger":
                if names_victim:
                    assert status in (403, 404), where
                    assert "victim/env" not in response.text or "victim/env" in path, where
                elif method == "GET":
                    assert "victim" not in response.text, where  # listings show nothing of other namespaces
            elif identity == "viewer":
                if method == "POST" and template.endswith(READ_POSTS):
                    assert status in (200, 422), where  # readers may: here the empty body is refused
                elif method in WRITES and names_victim and template.endswith(BODY_TARGETS):
                    assert status == 422 and "body.namespace" in response.text, where
                elif method in WRITES and names_victim:
                    assert status == 403 if "/tokens/" not in template else status == 404, where
                elif method == "GET" and names_victim and not (admin_level(template) or editor_level(template)):
                    assert status == baseline or template.startswith(("/api/v1/admin", "/api/v1/jobs")), where
                elif method == "GET" and names_victim:
                    assert status == 403, where
            elif identity == "editor" and names_victim and admin_level(template):
                assert status == 403, where
            elif identity == "editor" and method == "GET" and names_victim:
                if template.startswith(("/api/v1/admin", "/api/v1/jobs")):
                    assert status == 403, where
                elif "/tokens/" in template:
                    assert status in (200, 404, 405), where
                else:
                    assert status == baseline, where
    assert checked > 250


def test_listings_show_each_caller_only_what_it_may_read(world: World) -> None:
    seen = {}
    for identity in ("admin", "editor", "viewer", "stranger"):
        response = ask(world, identity, "GET", "/api/v1/namespaces")
        seen[identity] = sorted(n["name"] for n in response.json())
    assert {"mine", "victim"} <= set(seen["admin"])
    assert seen["editor"] == ["editor", "victim"] and seen["viewer"] == ["victim", "viewer"]
    assert seen["stranger"] == ["stranger"]
    builds = ask(world, "viewer", "GET", "/api/v1/builds").json()["items"]
    assert {b["environment"] for b in builds} == {"victim/env"}
    catalog = ask(world, "stranger", "GET", "/v2/_catalog")
    assert "victim" not in catalog.text


def test_the_registry_follows_the_bindings(world: World, tmp_path: Path) -> None:
    for identity, expected in (("viewer", 200), ("editor", 200), ("stranger", 403), ("anonymous", 401)):
        response = ask(world, identity, "GET", "/v2/victim/env/manifests/2")
        assert response.status_code == expected, (identity, response.text[:200])
