"""Authorization decides on the resource the route uses (issue #11, items 2 and 8).

The attack: ``/builds/2.0/spec`` was parsed as build 2 by the route while the authorization skipped the
unparsable id and allowed the request, so any token read, rebuilt and canceled another namespace's builds.
Here every route of the app with an id (enumerated from the route table, so new routes are covered) gets the
non-canonical spellings of an existing build's id from every kind of caller; a caller without a grant gets
404 for another namespace's resources, like for ones that do not exist; huge numbers are never a 500; a failed
``POST /environments`` leaves nothing behind. A real ``envyard serve`` on loopback, without workers: the builds
are completed by the test through the worker protocol (``tests/service/oci_content.py``).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from envyard.api.app import create_app
from envyard.api.settings import ServiceSettings
from tests.service.conftest import Service, create_environment, spec_text, start_service
from tests.service.oci_content import publish_two_namespaces

VARIANTS = ("2.0", "02", "+2", "²", "２", "-1", "0", "99999999999999999999999")  # build 2 exists, in "victim"
HUGE = ("2147483648", "9223372036854775807", "9223372036854775808", "99999999999999999999999")
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
BODY_METHODS = {"POST", "PUT", "PATCH"}


@dataclass
class World:
    service: Service
    tokens: dict[str, str | None]  # identity -> token (None: anonymous)
    ids: dict[str, int]  # identity -> token id
    victim_digest: str  # a blob only the victim's builds hold
    victim_artifact: str  # the name of an artifact of build 2


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]) -> Iterator[World]:
    """Builds 1 and 2 in victim/env, 3 in mine/env (all completed, with images); a token per identity."""
    service = start_service(tmp_path_factory.mktemp("authz-ids"), service_env, "--workers", "0")
    try:
        with service.client() as admin:
            built = publish_two_namespaces(admin)
            assert [b["id"] for b in built] == [1, 2, 3] and built[1]["environment"] == "victim/env"
            tokens: dict[str, str | None] = {"admin": service.token, "anonymous": None}
            ids: dict[str, int] = {}
            for identity, role, grants in (("granted", "user", {"victim": "editor"}),
                                           ("stranger", "user", {"mine": "editor"}),
                                           ("reader", "reader", {"victim": "viewer"}),
                                           ("worker", "worker", {})):
                created = admin.post("/api/v1/tokens", json={"name": identity, "role": role}).json()
                tokens[identity], ids[identity] = created["token"], created["id"]
                for namespace, grant in grants.items():
                    admin.put(f"/api/v1/namespaces/{namespace}/grants/{created['id']}",
                              json={"role": grant}).raise_for_status()
            artifacts = admin.get("/api/v1/builds/2/artifacts").json()
            mine = {a["digest"] for a in admin.get("/api/v1/builds/3/artifacts").json()}
            digest = next(a["digest"] for a in artifacts if a["digest"] not in mine)
        yield World(service, tokens, ids, digest, artifacts[0]["name"])
    finally:
        service.stop()


def client(world: World, identity: str) -> httpx.Client:
    token = world.tokens[identity]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=world.service.url, headers=headers, timeout=30.0)


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    """(method, path template) of every operation of the app, from the OpenAPI schema it generates."""
    schema = create_app(ServiceSettings(data_dir=tmp_path_factory.mktemp("route-table"))).openapi()
    found = [(method.upper(), path) for path, operations in schema["paths"].items() for method in operations]
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and (parameter["name"].endswith("_id") or "integer" in str(parameter)):
                    ID_PARAMS[(path, parameter["name"])] = parameter["schema"]
    assert len(found) > 40
    return found


ID_PARAMS: dict[tuple[str, str], dict[str, Any]] = {}  # (path, name) -> the schema of id path parameters


def fill(template: str, world: World, **override: str) -> str:
    """``template`` with valid values of the victim's resources (``override``: by parameter name)."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in override:
            return override[name]
        if name == "name":
            if template.startswith("/v2/"):
                return "victim/env"
            return world.victim_artifact if "/artifacts/" in template else ("t" if "targets" in template else "env")
        return {"build_id": "2", "other_id": "2", "token_id": str(world.ids["granted"]), "namespace": "victim",
                "binding_id": "1",
                "digest": world.victim_digest, "reference": "2", "snapshot_id": "1"}[name]

    return PARAM.sub(value, template)


def request(http: httpx.Client, method: str, path: str) -> httpx.Response:
    return http.request(method, path, json={} if method in BODY_METHODS else None)


def id_params(template: str) -> list[str]:
    """The parameters of ``template`` that are ids (a /v2/ manifest reference may be one: a build id tag)."""
    names = PARAM.findall(template)
    return [n for n in names if (template, n) in ID_PARAMS or (n == "reference" and template.startswith("/v2/"))]


def test_id_parameters_are_documented_as_bounded_integers(routes: list[tuple[str, str]]) -> None:
    assert len(ID_PARAMS) >= 15
    for (path, name), schema in ID_PARAMS.items():
        assert (schema["type"], schema["minimum"], schema["maximum"]) == ("integer", 1, 2**31 - 1), (path, name)


IDENTITIES = ("admin", "granted", "stranger", "reader", "worker", "anonymous")


def test_every_id_route_refuses_non_canonical_ids_for_every_identity(world: World,
                                                                      routes: list[tuple[str, str]]) -> None:
    """``2.0``, ``02``, ``+2``, ``²``, ``２``, ``-1``, ``0`` and a 77-bit number name no build: 422 (or 404),
    never 200, never 500, whoever asks; on /v2/ a build-id tag spelled so is MANIFEST_UNKNOWN for readers."""
    with_ids = [(m, t) for m, t in routes if id_params(t)]
    assert {t for _, t in with_ids} >= {"/api/v1/builds/{build_id}/spec", "/api/v1/builds/{build_id}/rebuild",
                                         "/api/v1/builds/{build_id}/diff/{other_id}",
                                         "/api/v1/jobs/{build_id}/heartbeat", "/api/v1/tokens/{token_id}",
                                         "/api/v1/namespaces/{namespace}/grants/{token_id}",
                                         "/v2/{name}/manifests/{reference}"}
    with client(world, "admin") as admin:  # the canonical spelling does name build 2
        assert admin.get("/api/v1/builds/2/spec").status_code == 200
        assert admin.get("/v2/victim/env/manifests/2").status_code == 200
    checked = 0
    for identity in IDENTITIES:
        with client(world, identity) as http:
            for method, template in with_ids:
                for param in id_params(template):
                    for variant in VARIANTS:
                        path = fill(template, world, **{param: variant})
                        response = request(http, method, path)
                        where = f"{identity} {method} {path}: {response.status_code} {response.text[:200]}"
                        checked += 1
                        if not template.startswith("/v2/"):
                            assert response.status_code in (404, 422), where
                            continue
                        assert response.status_code not in (200, 500), where
                        expected = {"anonymous": 401, "stranger": 403}.get(identity, 404)
                        assert response.status_code == expected, where
                        if expected == 404 and method == "GET":
                            assert response.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN", where
    assert checked > 1000


@pytest.mark.parametrize("tag", ["²", "２", "02", "2.0", "+2", "٢", "2%0A", "%202"])
def test_registry_tags_are_ascii_build_ids_only(world: World, tag: str) -> None:
    """A tag is a build id only in ASCII canonical digits: ``²`` gave a 500 and ``２`` served build 2."""
    with client(world, "granted") as http:
        for method in ("GET", "HEAD"):
            response = http.request(method, f"/v2/victim/env/manifests/{tag}")
            assert response.status_code == 404, (tag, response.status_code, response.text)
            if method == "GET":
                assert response.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        assert http.get("/v2/victim/env/manifests/2").status_code == 200


def test_every_route_naming_another_namespace_denies_a_stranger(world: World,
                                                                routes: list[tuple[str, str]]) -> None:
    """Every route with path parameters, given the victim's existing resources, refuses a user whose grants are
    elsewhere: 404 (or 403 where the role alone forbids it, DENIED on /v2/), never a 2xx, never a 422 (that
    would mean the request got past authorization to its body)."""
    with client(world, "stranger") as http:
        for method, template in routes:
            if not PARAM.search(template):
                continue
            response = request(http, method, fill(template, world))
            where = f"{method} {template}: {response.status_code} {response.text[:300]}"
            assert response.status_code in (403, 404), where
            assert "victim" not in response.text or template.startswith(("/v2/", "/api/v1/namespaces/{namespace}",
                                                                         "/api/v1/environments/")), where
        diff = http.get("/api/v1/builds/3/diff/2")  # the attack of the issue, with a canonical id
        assert diff.status_code == 404 and "victim" not in diff.text


def _without_numbers(problem: dict[str, Any]) -> dict[str, Any]:
    return {k: re.sub(r"\d+", "N", str(v)) for k, v in problem.items() if k != "instance"}


def test_a_stranger_gets_the_same_404_as_for_nothing(world: World) -> None:
    """Builds, specs, logs, artifacts, rebuild, cancel and diff of another namespace answer exactly as for a build
    that does not exist: 404, nothing named; the build listing filtered by another namespace's environment too."""
    with client(world, "stranger") as http:
        for method, suffix in (("GET", ""), ("GET", "/spec"), ("GET", "/logs"), ("GET", "/artifacts"),
                               ("GET", "/publications"), ("POST", "/rebuild"), ("POST", "/cancel"),
                               ("GET", "/diff/3")):
            hidden = http.request(method, f"/api/v1/builds/2{suffix}")
            missing = http.request(method, f"/api/v1/builds/999999{suffix}")
            assert hidden.status_code == missing.status_code == 404, (suffix, hidden.text)
            assert _without_numbers(hidden.json()) == _without_numbers(missing.json()), suffix
            assert "victim" not in hidden.text
        assert http.get("/api/v1/builds/3").status_code == 200  # its own
        hidden_env = http.get("/api/v1/builds", params={"environment": "victim/env"})
        missing_env = http.get("/api/v1/builds", params={"environment": "victim/nope"})
        assert hidden_env.status_code == missing_env.status_code == 404
        hidden_blob = http.get(f"/api/v1/blobs/{world.victim_digest}")
        missing_blob = http.get(f"/api/v1/blobs/sha256:{'0' * 64}")
        assert hidden_blob.status_code == missing_blob.status_code == 404
        assert _without_numbers(hidden_blob.json()) == _without_numbers(
            {**missing_blob.json(), "detail": missing_blob.json()["detail"].replace("0" * 64, world.victim_digest[7:])})
        for path in ("/api/v1/namespaces/victim", "/api/v1/environments/victim/env"):
            hidden = http.get(path)
            missing = http.get(path.replace("victim", "nosuch"))
            assert hidden.status_code == missing.status_code == 404, path
            assert _without_numbers(hidden.json()) == _without_numbers(
                {k: str(v).replace("nosuch", "victim") for k, v in missing.json().items()}), path
    with client(world, "anonymous") as http:  # without a token: 401 alike
        assert http.get("/api/v1/builds/2").status_code == http.get("/api/v1/builds/999999").status_code == 401
        assert "victim" not in http.get("/api/v1/builds/2").text


def test_a_reader_may_not_write_and_is_told_without_names(world: World) -> None:
    """A caller who reads a build but may not write it gets 403, naming no namespace."""
    with client(world, "reader") as http:
        assert http.get("/api/v1/builds/2/spec").status_code == 200
        for response in (http.post("/api/v1/builds/2/rebuild"), http.post("/api/v1/builds/2/cancel"),
                         http.patch("/api/v1/environments/victim/env", json={"description": "x"})):
            assert response.status_code == 403 and "victim" not in response.json()["detail"], response.text
    with client(world, "granted") as http:
        assert http.post("/api/v1/builds/2/cancel").status_code == 409  # completed: past authorization


def test_huge_numbers_are_invalid_not_500(world: World) -> None:
    """Numbers past the id columns and past 64 bits: 422 (or 400 for a cursor) on ids, worker routes, the
    log stream's Last-Event-ID, set-current and the garbage collection's grace period."""
    with client(world, "admin") as admin:
        for number in HUGE:
            for path in (f"/api/v1/builds/{number}", f"/api/v1/builds/2/diff/{number}",
                         f"/api/v1/tokens/{number}"):
                assert admin.request("DELETE" if "tokens" in path else "GET", path).status_code == 422, path
            assert admin.post(f"/api/v1/jobs/{number}/heartbeat", json={"lease_id": "x"}).status_code == 422
            assert admin.put("/api/v1/environments/victim/env/current",
                             json={"build_id": int(number)}).status_code == 422
            assert admin.get("/api/v1/builds/2/logs", headers={"Last-Event-ID": number}).status_code == 422
            cursor = base64.urlsafe_b64encode(f"id:{number}".encode()).decode().rstrip("=")
            assert admin.get("/api/v1/builds", params={"cursor": cursor}).status_code == 400
        assert admin.get("/api/v1/builds/2147483647").status_code == 404  # the largest id: just not there
        assert admin.put(f"/api/v1/jobs/2/blobs/sha256:{'0' * 64}",
                         params={"lease_id": "x", "size": HUGE[-1]}, content=b"").status_code == 422
        for grace in (1e300, 99999999999999999999999, -1):
            response = admin.post("/api/v1/admin/gc", json={"dry_run": True, "grace_seconds": grace})
            assert response.status_code == 422 and response.json()["field"] == "body.grace_seconds", response.text
        for build_id in (2.0, True, "02", "2.0", None):  # a body id is an integer (or its canonical text)
            response = admin.put("/api/v1/environments/victim/env/current", json={"build_id": build_id})
            assert response.status_code == 422, (build_id, response.text)
        assert admin.put("/api/v1/environments/victim/env/current", json={"build_id": 3}).status_code == 404
        assert admin.put("/api/v1/environments/victim/env/current", json={"build_id": 2}).status_code == 200


def test_a_failed_environment_creation_leaves_no_namespace(world: World) -> None:
    """The namespace an invalid submission would have created is not committed (a SQLite savepoint's RELEASE
    committed it)."""
    with client(world, "stranger") as http:
        for index, body in enumerate(({"spec": "dependencies:\n  - python\n  bad: [\n"},
                                      {"spec": spec_text(["e2e-env"]), "platforms": ["linux-65"]})):
            refused = http.post("/api/v1/environments", json={"namespace": f"fresh{index}", "name": "x", **body})
            assert refused.status_code == 422, refused.text
        assert not any(n.startswith("fresh") for n in http.get("/api/v1/whoami").json()["grants"])
    with client(world, "admin") as admin:
        for index in range(2):
            assert admin.get(f"/api/v1/namespaces/fresh{index}").status_code == 404
        assert not any(n["name"].startswith("fresh") for n in admin.get("/api/v1/namespaces").json())


def test_ids_on_both_databases(start: Any, tmp_path: Path) -> None:
    """PostgreSQL's id columns are 32-bit: the largest id is looked up (404), anything larger is a 422 before
    the database sees it; a failed environment creation leaves nothing there either."""
    service: Service = start("--workers", "0")
    with service.client() as admin:
        build = create_environment(admin, "team", "env", ["e2e-env"])
        assert admin.get(f"/api/v1/builds/{build['id']}").status_code == 200
        assert admin.get("/api/v1/builds/2147483647").status_code == 404
        assert admin.post("/api/v1/jobs/2147483647/heartbeat", json={"lease_id": "x"}).status_code == 404
        for number in HUGE:
            assert admin.get(f"/api/v1/builds/{number}").status_code == 422
            assert admin.get(f"/v2/team/env/manifests/{number}").json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        refused = admin.post("/api/v1/environments", json={"namespace": "fresh", "name": "x", "spec": "x: [\n"})
        assert refused.status_code == 422
        assert admin.get("/api/v1/namespaces/fresh").status_code == 404
