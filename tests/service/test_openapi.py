"""The OpenAPI document matches the API (schemathesis against a real server), 405s carry ``Allow``, request
bodies are strict, and the documentation pages are gated by ``public_docs`` and served without a CDN."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks as st
from schemathesis.generation import GenerationMode

from envyard.api.settings import ServiceSettings
from tests.service.conftest import REPO, Service, start_service

MAX_EXAMPLES = 6  # fuzzed cases per operation (the user's run; the admin's runs the coverage phase's cases)
CHECKS = [st.not_a_server_error, st.status_code_conformance, st.content_type_conformance,
          st.response_headers_conformance, st.response_schema_conformance, st.negative_data_rejection]


@dataclass
class Api:
    service: Service
    tokens: dict[str, str]  # who -> token
    token_ids: set[int]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The servers' environment: no workers run here, so no channel is needed."""
    base = {k: v for k, v in os.environ.items() if k != "ENVYARD_PUBLIC_DOCS"}
    return {**base, "ENVYARD_CACHE_DIR": str(tmp_path_factory.mktemp("openapi-cache")), "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Iterator[Api]:
    """A server with closed documentation (``ENVYARD_PUBLIC_DOCS=false``), no workers, an admin and a user
    token; the user is the editor of namespace ``team``, whose environment ``app`` has a queued build."""
    service = start_service(tmp_path_factory.mktemp("openapi"), {**env, "ENVYARD_PUBLIC_DOCS": "false"},
                            "--workers", "0")
    try:
        with service.client() as admin:
            user = admin.post("/api/v1/tokens", json={"name": "fuzz-user", "role": "user"}).json()
            ids = {admin.get("/api/v1/whoami").json()["token_id"], user["id"]}
        with service.client(user["token"]) as http:
            assert http.post("/api/v1/namespaces", json={"name": "team"}).status_code == 201
            spec = "name: app\nchannels: [conda-forge]\ndependencies: [zlib]\n"
            build = http.post("/api/v1/environments", json={"namespace": "team", "name": "app", "spec": spec})
            assert build.status_code == 201, build.text
        yield Api(service, {"admin": service.token, "user": user["token"]}, ids)
    finally:
        service.stop()


def _schema(api: Api, who: str, phases: list[str]) -> Any:
    """The document as a client with ``who``'s token fetches it (it is not public on this server)."""
    schema = schemathesis.openapi.from_url(f"{api.service.url}/openapi.json",
                                           headers={"Authorization": f"Bearer {api.tokens[who]}"})
    schema.config.update(base_url=api.service.url, request_timeout=10)
    schema.config.phases.update(phases=phases)
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                    max_examples=MAX_EXAMPLES)
    return schema


@pytest.fixture(scope="module")
def admin_schema(api: Api) -> Any:
    return _schema(api, "admin", ["examples", "coverage"])


@pytest.fixture(scope="module")
def user_schema(api: Api) -> Any:
    return _schema(api, "user", ["examples", "fuzzing"])


admin_schema_ = schemathesis.pytest.from_fixture("admin_schema")
user_schema_ = schemathesis.pytest.from_fixture("user_schema")


def _bounded(case: Any, api: Api) -> bool:
    """Shape ``case`` so that it ends quickly and leaves the fixture usable; False: do not send it.

    Excluded or bounded, each for a reason:
    * ``GET .../logs`` with ``follow=true`` or ``Accept: text/event-stream`` streams until the build ends, and the
      fixture's build never runs (no workers): asked as text instead (the stream: tests/service/test_build_flow.py);
    * ``POST /api/v1/jobs/claim`` long-polls up to ``wait_seconds`` (60): capped at 0.2 s;
    * ``DELETE /api/v1/tokens/{id}`` of the fixture's own tokens would end the run with 401s: not sent.
    """
    path, method = case.operation.path, case.method.upper()
    if path.endswith("/logs") and method == "GET":
        case.query = {**(case.query or {}), "follow": "false"}
        case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "accept"}
    if path == "/api/v1/jobs/claim" and isinstance(case.body, dict):
        wait = case.body.get("wait_seconds")
        if isinstance(wait, int | float) and not isinstance(wait, bool) and 0.2 < wait <= 60:  # > 60: a 422
            case.body["wait_seconds"] = 0.2
    parameters = case.path_parameters or {}
    own_token = str(parameters.get("token_id")) in {str(i) for i in api.token_ids}
    return not (path == "/api/v1/tokens/{token_id}" and method == "DELETE" and own_token)


def _check(case: Any, api: Api, who: str) -> None:
    if _bounded(case, api):
        case.call_and_validate(headers={"Authorization": f"Bearer {api.tokens[who]}"}, checks=CHECKS)


FUZZ = settings(deadline=None, max_examples=MAX_EXAMPLES, suppress_health_check=list(HealthCheck))


@admin_schema_.parametrize()
@FUZZ
def test_every_operation_matches_the_document_as_admin(case: Any, api: Api) -> None:
    """Every operation in the document, fuzzed with valid and invalid data, with the admin token: no 500, every
    status, content type, header and body documented, and invalid data rejected."""
    _check(case, api, "admin")


@user_schema_.parametrize()
@FUZZ
def test_every_operation_matches_the_document_as_user(case: Any, api: Api) -> None:
    """The same with a user token (the editor of one namespace): 403s and 404s where the admin got answers."""
    _check(case, api, "user")


def test_the_document_covers_the_api(api: Api) -> None:
    """Every route but the documentation's own is in the document, /v2/ included; errors are problems."""
    with api.service.client() as http:
        document = http.get("/openapi.json").json()
    paths = document["paths"]
    assert "/v2/{name}/manifests/{reference}" in paths and "/api/v1/builds/{build_id}/logs" in paths
    assert not {"/docs", "/redoc", "/openapi.json"} & set(paths)
    problem = {"$ref": "#/components/schemas/Problem"}
    create = paths["/api/v1/namespaces"]["post"]["responses"]
    assert {"201", "400", "401", "403", "409", "422"} <= set(create)
    assert create["422"]["content"] == {"application/problem+json": {"schema": problem}}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    blob = paths["/v2/{name}/blobs/{digest}"]["get"]["responses"]
    assert blob["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OciErrors"}
    assert {"200", "206", "307", "416"} <= set(blob)


def test_wrong_method_is_405_with_allow(api: Api) -> None:
    """A method a path does not serve is 405 naming every method the path does (from all its routes)."""
    with api.service.client() as http:
        for method, path, allowed in [
            ("PUT", "/api/v1/namespaces", {"GET", "POST"}),
            ("POST", "/api/v1/namespaces/team", {"GET", "PATCH", "DELETE"}),
            ("TRACE", "/readyz", {"GET"}),
            ("DELETE", "/v2/team/app/blobs/sha256:" + "0" * 64, {"GET", "HEAD"}),
            ("POST", "/docs/assets/swagger-ui.css", {"GET", "HEAD"}),
        ]:
            response = http.request(method, path)
            assert response.status_code == 405, (method, path, response.text)
            if path.startswith("/v2/"):  # the distribution spec's error body
                assert response.json()["errors"][0]["code"] == "UNSUPPORTED"
            else:
                assert response.headers["content-type"] == "application/problem+json"
            assert set(response.headers["allow"].split(", ")) == allowed, (method, path)


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v1/namespaces/team", {"public": 0}, "body.public"),
    ("/api/v1/namespaces/team", {"public": "true"}, "body.public"),
    ("/api/v1/namespaces/team", {"description": 7}, "body.description"),
])
def test_request_bodies_are_strict(api: Api, path: str, body: dict[str, Any], field: str) -> None:
    """A JSON value of the wrong type is refused, not coerced (``"public": 0`` made a namespace public)."""
    with api.service.client() as http:
        response = http.patch(path, json=body)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == field
        assert http.get(path).json()["public"] is False


def test_closed_docs_need_a_token(api: Api) -> None:
    """With public_docs false, the pages and the document need a token of any role: Bearer, or Basic (any user,
    the token as password) as a browser sends it after the Basic challenge."""
    url = api.service.url
    for path in ("/docs", "/redoc", "/openapi.json"):
        anonymous = httpx.get(url + path)
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic ")
        assert anonymous.headers["content-type"] == "application/problem+json"
        assert httpx.get(url + path, headers={"Authorization": "Bearer ey_wrong"}).status_code == 401
        assert httpx.get(url + path, headers={"Authorization": f"Bearer {api.tokens['user']}"}).status_code == 200
        assert httpx.get(url + path, auth=("me", api.tokens["user"])).status_code == 200


def _assets(page: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page) + re.findall(r"""url\s*:\s*'([^']+)'""", page)


def test_docs_pages_load_their_assets_from_this_server(api: Api) -> None:
    """/docs and /redoc name no other host, and every script, style sheet and icon they name is served here."""
    with api.service.client() as http:
        for page in ("/docs", "/redoc"):
            html = http.get(page).text
            urls = _assets(html)
            assert any(u.endswith(".js") for u in urls), html
            for url in urls:
                absolute = urljoin(api.service.url + page, url)
                assert urlsplit(absolute).netloc == urlsplit(api.service.url).netloc, (page, url)
                response = http.get(absolute)
                assert response.status_code == 200 and response.content, (page, url)
            assert "cdn" not in html.lower() and "fonts.googleapis" not in html


@pytest.mark.parametrize(("settings_", "host", "public"), [
    (ServiceSettings(_env_file=None), "127.0.0.1", True),
    (ServiceSettings(_env_file=None), "::1", True),
    (ServiceSettings(_env_file=None), "localhost", True),
    (ServiceSettings(_env_file=None), "0.0.0.0", False),
    (ServiceSettings(_env_file=None), "192.168.1.5", False),
    (ServiceSettings(_env_file=None, database_url="postgresql://db/envyard"), "127.0.0.1", False),
    (ServiceSettings(_env_file=None, storage_url="s3://bucket/prefix"), "127.0.0.1", False),
    (ServiceSettings(_env_file=None, public_docs=True), "0.0.0.0", True),
    (ServiceSettings(_env_file=None, public_docs=False), "127.0.0.1", False),
    (ServiceSettings(_env_file=None), None, False),
])
def test_docs_are_public_only_when_embedded(settings_: ServiceSettings, host: str | None, public: bool) -> None:
    """Default: open for SQLite + local store on loopback (``envyard serve`` for one user), closed otherwise."""
    assert settings_.docs_are_public(host) is public


def test_embedded_server_docs_are_open(tmp_path: Path, env: dict[str, str]) -> None:
    """``envyard serve`` with its defaults (SQLite, local store, loopback) serves the docs without a token."""
    service = start_service(tmp_path, env, "--workers", "0")
    try:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert httpx.get(service.url + path).status_code == 200, path
        assert httpx.get(service.url + "/api/v1/whoami").status_code == 401
    finally:
        service.stop()
