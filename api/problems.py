"""The one place errors become HTTP responses: RFC 9457 problem details."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from builder.errors import PROBLEM_BASE, EnvyardError

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("envyard.api")


def problem_response(problem: dict[str, object], status: int) -> JSONResponse:
    return JSONResponse(problem, status_code=status, media_type=PROBLEM_JSON)


REGISTRY_PREFIX = "/v2/"
OCI_CODES = {401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN", 416: "RANGE_INVALID"}


def oci_error_response(exc: EnvyardError) -> JSONResponse:
    """The distribution-spec error body (``{"errors": [{code, message, detail}]}``) for the /v2/ routes."""
    code = exc.details.get("oci") or OCI_CODES.get(exc.status, "UNSUPPORTED")
    body = {"errors": [{"code": code, "message": exc.one_line(),
                        "detail": {k: v for k, v in exc.details.items() if k != "oci"}}]}
    return JSONResponse(body, status_code=exc.status, headers=challenge(exc, registry=True))


def challenge(exc: EnvyardError, registry: bool = False) -> dict[str, str]:
    if exc.status != 401:
        return {}
    if registry:
        return {"WWW-Authenticate": 'Basic realm="envyard", charset="UTF-8"'}
    return {"WWW-Authenticate": 'Bearer realm="envyard"'}


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(EnvyardError)
    async def envyard_error(request: Request, exc: EnvyardError) -> JSONResponse:
        if request.url.path.startswith(REGISTRY_PREFIX) or request.url.path == REGISTRY_PREFIX.rstrip("/"):
            return oci_error_response(exc)
        response = problem_response(exc.to_problem(instance=request.url.path), exc.status)
        response.headers.update(challenge(exc))
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
        problem = {
            "type": PROBLEM_BASE + ("not-found" if exc.status_code == 404 else "http-error"),
            "title": str(exc.detail),
            "status": exc.status_code,
            "detail": str(exc.detail),
            "instance": request.url.path,
        }
        return problem_response(problem, exc.status_code)

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
