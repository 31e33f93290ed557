"""The one place errors become HTTP responses: RFC 9457 problem details, and on /v2/ the distribution spec's
error body (``{"errors": [{code, message, detail}]}``) with its ``WWW-Authenticate`` challenges.

Typed errors name their OCI code in ``details["oci"]`` (NAME_UNKNOWN, DIGEST_INVALID, DENIED, ...; without one
the status decides, :data:`OCI_CODES`); that key and the RFC 6750 error of a 401 challenge are rendered here,
never shown as details.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount

from envyard.api.auth import BEARER_ERROR, is_registry_path
from envyard.api.auth.registry_tokens import REGISTRY_SERVICE
from envyard.api.openapi import DOCS_PATHS
from envyard.builder.errors import PROBLEM_BASE, EnvyardError

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)


def problem_response(problem: dict[str, object], status: int) -> JSONResponse:
    return JSONResponse(problem, status_code=status, media_type=PROBLEM_JSON)


TOKEN_PATH = "/v2/token"
OCI_CODES = {401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN", 416: "RANGE_INVALID"}
INTERNAL_DETAILS = ("oci", BEARER_ERROR)
REGISTRY_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}
_HOST = re.compile(r"^[A-Za-z0-9.:\[\]-]{1,300}$")
_REPOSITORY = re.compile(r"^[a-z0-9._/-]{1,300}$")


def oci_errors(code: str, message: str, detail: dict[str, object]) -> dict[str, object]:
    """The distribution-spec error body."""
    return {"errors": [{"code": code, "message": message, "detail": detail}]}


def oci_error_response(exc: EnvyardError, request: Request | None = None) -> JSONResponse:
    """The distribution-spec error body (``{"errors": [{code, message, detail}]}``) for the /v2/ routes."""
    code = exc.details.get("oci") or OCI_CODES.get(exc.status, "UNSUPPORTED")
    body = oci_errors(code, exc.one_line(), {k: v for k, v in exc.details.items() if k not in INTERNAL_DETAILS})
    return JSONResponse(body, status_code=exc.status,
                        headers={**REGISTRY_HEADERS, **challenge(exc, request), **exc.http_headers()})


def token_realm(request: Request) -> str:
    """Where registry clients get bearer tokens: this server as the client reached it. The host is the Host
    header, the scheme what uvicorn makes of X-Forwarded-Proto (trusted only from FORWARDED_ALLOW_IPS, loopback
    by default). X-Forwarded-Host is not honoured: a forged one cached by a proxy could send other clients'
    credentials elsewhere."""
    host = request.headers.get("host", "")
    if not _HOST.match(host):
        server = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{request.url.scheme}://{host}{TOKEN_PATH}"


def challenge(exc: EnvyardError, request: Request | None = None) -> dict[str, str]:
    """``WWW-Authenticate`` of a 401: on /v2/ Docker's token auth (realm, service, scope, error), on /v2/token
    Basic, on the API a bearer token."""
    if exc.status != 401:
        return {}
    path = request.url.path if request is not None else ""
    if path in DOCS_PATHS:  # a browser asks for Basic credentials (any user name, the token as password)
        return {"WWW-Authenticate": 'Basic realm="envyard", charset="UTF-8"'}
    if request is None or not is_registry_path(path):
        return {"WWW-Authenticate": 'Bearer realm="envyard"'}
    if path == TOKEN_PATH:
        return {"WWW-Authenticate": f'Basic realm="{REGISTRY_SERVICE}", charset="UTF-8"'}
    parts = [f'realm="{token_realm(request)}"', f'service="{REGISTRY_SERVICE}"']
    repository = str(request.path_params.get("name") or "")
    if _REPOSITORY.match(repository):
        parts.append(f'scope="repository:{repository}:pull"')
    error = exc.details.get(BEARER_ERROR)
    if error:
        parts.append(f'error="{error}"')
    return {"WWW-Authenticate": "Bearer " + ",".join(parts)}


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> str:
    """The ``Allow`` header of a 405: every method some route serves at the request's path (a path's methods are
    often spread over several routes, and the router names only the first one's); a mount (the documentation's
    static assets) serves GET and HEAD."""
    routes = request.app.router.routes
    allowed = set()
    for method in METHODS:
        scope = {"type": "http", "method": method, "path": request.scope["path"], "headers": [],
                 "root_path": request.scope.get("app_root_path", "")}  # as it came in, before any mount
        for route in routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                allowed |= {"GET", "HEAD"} & {method} if isinstance(route, Mount) else {method}
                break
    return ", ".join(m for m in METHODS if m in allowed)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(EnvyardError)
    async def envyard_error(request: Request, exc: EnvyardError) -> JSONResponse:
        if is_registry_path(request.url.path):
            return oci_error_response(exc, request)
        response = problem_response(exc.to_problem(instance=request.url.path), exc.status)
        response.headers.update(challenge(exc, request))
        response.headers.update(exc.http_headers())
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(part) for part in error["loc"]), "message": error["msg"]} for error in exc.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        problem = {
            "type": PROBLEM_BASE + "invalid-request",
            "title": "Invalid request",
            "status": 422,
            "detail": f"{first['field']}: {first['message']}",
            "field": first["field"],
            "hint": "see the OpenAPI schema at /openapi.json for this route's fields",
            "instance": request.url.path,
            "errors": errors,
        }
        return problem_response(problem, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        """The router's own answers (no route for the path: 404, not for this method: 405) and other HTTP errors;
        on /v2/ in the distribution spec's error body."""
        if is_registry_path(request.url.path):
            code = OCI_CODES.get(exc.status_code, "UNSUPPORTED")
            response = JSONResponse(oci_errors(code, str(exc.detail), {}), status_code=exc.status_code,
                                    headers=REGISTRY_HEADERS)
        else:
            response = problem_response({
                "type": PROBLEM_BASE + ("not-found" if exc.status_code == 404 else "http-error"),
                "title": str(exc.detail),
                "status": exc.status_code,
                "detail": str(exc.detail),
                "instance": request.url.path,
            }, exc.status_code)
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["Allow"] = allowed_methods(request)
        return response

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        problem = {
            "type": PROBLEM_BASE + "internal",
            "title": "Internal server error",
            "status": 500,
            "detail": f"{type(exc).__name__}: {exc}",
            "hint": "this is a bug in envyard; the server log has the traceback",
            "instance": request.url.path,
        }
        return problem_response(problem, 500)
