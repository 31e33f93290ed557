"""The OpenAPI document and the documentation pages.

The document says every response an operation can give, added here in one place rather than on each route:

* errors are RFC 9457 problem details (``application/problem+json``, the :class:`Problem` schema), on /v2/ the
  distribution spec's error body (:class:`OciErrors`) except for request validation (422, a problem); which
  statuses an operation documents follows from its shape (:func:`error_statuses`): a token (401, 403), path
  parameters (404), parameters or a body (422), a write (409), a body or a cursor (400), plus the statuses
  of :data:`EXTRA_STATUSES`; a route may declare more with ``responses={status: {"description": ...}}`` and gets
  the problem schema for them here;
* successes that are not JSON (specs, logs, artifacts, manifests, blobs, redirects) are listed in
  :data:`SUCCESS_CONTENT`.

``/docs`` (Swagger UI), ``/redoc`` (ReDoc) and ``/openapi.json`` are open without a token only when
``ServiceSettings.public_docs`` says so (see :meth:`api.settings.ServiceSettings.docs_are_public`); otherwise
they need a token of any role, as ``Authorization: Bearer`` or as the password of Basic authentication (which a
browser asks for). The pages load their scripts and styles from this server (the copies of swagger-ui-dist and
ReDoc that the ``fastapi-offline`` package ships, under :data:`ASSETS_PATH`), so they work offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from envyard.api.auth.principals import Action
from envyard.api.deps import authorize

__all__ = [
    "ASSETS_PATH", "DOCS_PATHS", "EXTRA_STATUSES", "SUCCESS_CONTENT", "OciErrors", "Problem", "document_responses",
    "error_statuses", "install_docs",
]

PROBLEM_JSON = "application/problem+json"
DOCS_PATH, REDOC_PATH, OPENAPI_PATH = "/docs", "/redoc", "/openapi.json"
DOCS_PATHS = frozenset({DOCS_PATH, REDOC_PATH, OPENAPI_PATH})
ASSETS_PATH = "/docs/assets"
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
REGISTRY_PREFIX = "/v2/"
WRITES = frozenset({"post", "put", "patch", "delete"})


class ValidationIssue(BaseModel):
    field: str = Field(description="Where: location and field, dot-separated (body.spec, query.limit).")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details: every error of /api/v1 (and request validation errors everywhere)."""

    type: str = Field(description="A URI naming the kind of problem (https://envyard.dev/problems/<code>).")
    title: str
    status: int = Field(ge=100, le=599)
    detail: str = Field(description="What went wrong, in one sentence.")
    instance: str | None = Field(default=None, description="The request path.")
    hint: str | None = Field(default=None, description="What to do about it.")
    file: str | None = None
    line: int | None = None
    field: str | None = Field(default=None, description="The request or spec field at fault.")
    details: dict[str, Any] | None = None
    errors: list[ValidationIssue] | None = Field(default=None, description="Every invalid field (422).")


class OciError(BaseModel):
    code: str = Field(description="NAME_UNKNOWN, MANIFEST_UNKNOWN, BLOB_UNKNOWN, DIGEST_INVALID, UNAUTHORIZED, ...")
    message: str
    detail: Any = None


class OciErrors(BaseModel):
    """The distribution spec's error body, on /v2/."""

    errors: list[OciError]


DESCRIPTIONS = {
    400: "Bad request (e.g. a malformed cursor or digest)",
    401: "No token, or a token this server does not know",
    403: "The token's role or grants do not allow this",
    404: "Not found (or not readable with this token)",
    409: "Conflicts with the resource's current state",
    413: "Request body too large",
    416: "Range not satisfiable",
    422: "Invalid request",
    424: "A channel or index the request depends on failed",
    429: "Too many requests with this token; retry later",
    500: "A bug in envyard (the server log has the traceback)",
    502: "A registry or upstream server failed",
    503: "The database or artifact store is unavailable",
}

# Statuses an operation gives besides those that follow from its shape (method, path as in the document).
EXTRA_STATUSES: dict[tuple[str, str], tuple[int, ...]] = {
    ("get", "/readyz"): (503,),
    ("get", "/api/v1/builds"): (404,),  # an environment filter naming none the token may read
    ("get", "/api/v1/builds/{build_id}/diff/{other_id}"): (409,),  # a build that did not complete
    ("post", "/api/v1/builds/{build_id}/publications"): (400,),
    ("put", "/api/v1/jobs/{build_id}/blobs/{digest}"): (400,),
    ("get", "/v2/{name}/blobs/{digest}"): (400, 416),
    ("head", "/v2/{name}/blobs/{digest}"): (400, 416),
    ("get", "/v2/{name}/referrers/{digest}"): (400,),
    ("get", "/v2/{name}/manifests/{reference}"): (400,),
    ("head", "/v2/{name}/manifests/{reference}"): (400,),
    ("post", "/api/v1/admin/retention"): (404,),
    ("get", "/api/v1/usage"): (400,),  # since not before until  # a namespace that does not exist
    ("post", "/api/v1/builds/{build_id}/promote"): (409,),  # a build that did not complete
}

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_REDIRECT = {"description": "Redirect to a presigned object-store URL (S3 stores)",
             "headers": {"Location": {"schema": {"type": "string"}}}}
_OCI_MANIFEST = {media: _BINARY for media in (
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json", "*/*")}
SUCCESS_CONTENT: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("get", "/api/v1/builds/{build_id}/spec"): {
        "200": {"description": "The submitted spec, as it was sent", "content": {"text/yaml": {}}}},
    ("get", "/api/v1/builds/{build_id}/logs"): {
        "200": {"description": "The log as text, or as Server-Sent Events (follow)",
                "content": {"text/plain": {"schema": {"type": "string"}},
                            "text/event-stream": {"schema": {"type": "string"}}}}},
    ("get", "/api/v1/builds/{build_id}/artifacts/{name}"): {
        "200": {"description": "The artifact's bytes", "content": {"*/*": _BINARY}}, "307": _REDIRECT},
    ("get", "/api/v1/blobs/{digest}"): {
        "200": {"description": "The artifact's bytes", "content": {"*/*": _BINARY}}, "307": _REDIRECT},
    ("get", "/v2/"): {"200": {"description": "The registry API is served",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    ("get", "/v2/{name}/manifests/{reference}"): {
        "200": {"description": "The manifest", "content": _OCI_MANIFEST}},
    ("head", "/v2/{name}/manifests/{reference}"): {"200": {"description": "The manifest exists"}},
    ("get", "/v2/{name}/blobs/{digest}"): {
        "200": {"description": "The blob", "content": {"*/*": _BINARY}},
        "206": {"description": "The requested range of the blob", "content": {"*/*": _BINARY}},
        "307": _REDIRECT},
    ("head", "/v2/{name}/blobs/{digest}"): {
        "200": {"description": "The blob exists"}, "206": {"description": "The requested range exists"}},
    ("get", "/v2/{name}/tags/list"): {
        "200": {"description": "The tags", "content": {"application/json": {"schema": {
            "type": "object", "required": ["name", "tags"],
            "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}}}}}},
    ("get", "/v2/{name}/referrers/{digest}"): {
        "200": {"description": "An image index of the referrers",
                "content": {"application/vnd.oci.image.index.v1+json": {"schema": {"type": "object"}}}}},
}


def error_statuses(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses ``operation`` can answer with, from its shape and :data:`EXTRA_STATUSES`."""
    statuses = {500, *EXTRA_STATUSES.get((method, path), ())}
    parameters = operation.get("parameters", [])
    if operation.get("security"):
        statuses |= {401, 403}
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    if parameters or "requestBody" in operation:
        statuses.add(422)
    if method in WRITES and not path.startswith(REGISTRY_PREFIX):
        statuses.add(409)
    if "requestBody" in operation or any(p.get("name") == "cursor" for p in parameters):
        statuses.add(400)  # a body that is not JSON; a cursor this server did not hand out
    return statuses


def _optional_token(method: str, operation: dict[str, Any]) -> None:
    """Reads need no token on a public namespace (and /v2/token issues anonymous tokens): say so with the empty
    security requirement."""
    security = operation.get("security")
    if security and method in ("get", "head") and {} not in security:
        operation["security"] = [*security, {}]


def _error_response(status: int, path: str, existing: dict[str, Any] | None) -> dict[str, Any]:
    registry = path.startswith(REGISTRY_PREFIX) and status != 422
    media, schema = ("application/json", "OciErrors") if registry else (PROBLEM_JSON, "Problem")
    response: dict[str, Any] = {"description": DESCRIPTIONS.get(status, "Error")}
    if existing and existing.get("description") and not existing["description"].startswith("Validation Error"):
        response["description"] = existing["description"]
    response["content"] = {media: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"description": "The authentication scheme to use",
                                                    "schema": {"type": "string"}}}
    return response


def document_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the error responses (and non-JSON successes) of every operation of ``schema`` (in place)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (Problem, OciErrors):
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            _optional_token(method, operation)
            responses = operation.setdefault("responses", {})
            for code, success in SUCCESS_CONTENT.get((method, path), {}).items():
                responses[code] = success
            declared = {int(code) for code in responses if code.isdigit() and int(code) >= 400}
            for status in sorted(error_statuses(method, path, operation) | declared):
                responses[str(status)] = _error_response(status, path, responses.get(str(status)))
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install_docs(app: FastAPI, public: bool) -> None:
    """``/openapi.json``, ``/docs`` and ``/redoc`` (open, or for any token: ``public``), and their assets."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_responses(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    guard = [] if public else [Depends(authorize(Action.READ))]
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get(OPENAPI_PATH, include_in_schema=False, dependencies=guard)
    def openapi_json() -> JSONResponse:
        return JSONResponse(openapi())

    @app.get(DOCS_PATH, include_in_schema=False, dependencies=guard)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + OPENAPI_PATH, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        )

    @app.get(REDOC_PATH, include_in_schema=False, dependencies=guard)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=root + OPENAPI_PATH, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png", with_google_fonts=False)
