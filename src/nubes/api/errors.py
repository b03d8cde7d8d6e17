"""The one place that turns exceptions into HTTP responses.

Every error body is ``{"error": {"code", "message", "request_id"}}`` (plus ``details`` for
field errors). Unknown exceptions become a 500 with no traceback in the body; the traceback
goes to the log under the request id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nubes.domain import errors as E

log = logging.getLogger("nubes.api")

STATUS: list[tuple[type[E.NubesError], int]] = [
    (E.InvalidInput, 400),
    (E.NotAuthenticated, 401),
    (E.Forbidden, 403),  # includes QuotaExceeded, as in Nova
    (E.NotFound, 404),
    (E.Conflict, 409),
    (E.PayloadTooLarge, 413),
    (E.Unavailable, 503),
]

HTTP_CODES = {
    400: "nubes.request.invalid",
    401: "nubes.auth.unauthenticated",
    403: "nubes.policy.forbidden",
    404: "nubes.request.not_found",
    405: "nubes.request.not_found",
    413: "nubes.request.too_large",
}


def status_for(exc: E.NubesError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def error_response(
    request: Request, status: int, code: str, message: str, details: Any = None
) -> JSONResponse:
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "request_id": request_id_of(request),
    }
    if details is not None:
        body["details"] = details
    headers = {"WWW-Authenticate": 'Token realm="nubes"'} if status == 401 else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        where, rest = parts[0], parts[1:]
        return f"{'.'.join(rest) or where}" + ("" if where == "body" else f" ({where})")
    return ".".join(parts)


def nubes_error(request: Request, exc: E.NubesError) -> JSONResponse:
    status = status_for(exc)
    if status >= 500:
        log.error("request %s failed: %s", request_id_of(request), exc)
    return error_response(request, status, exc.error_code, exc.message)


def invalid(request: Request, errors: Sequence[Any]) -> JSONResponse:
    """400 for pydantic's errors, each ``loc`` starting with where the value was (body,
    query, path, header)."""
    details = []
    for err in errors:
        field = _field(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            field, msg = "body", "is not valid JSON"
        details.append({"field": field, "message": msg})
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
    return error_response(request, 400, "nubes.request.invalid", message, details)


def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, "nubes.request.invalid")
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"no such path: {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return error_response(request, exc.status_code, code, message)


def unexpected(request: Request) -> JSONResponse:
    log.exception("request %s failed unexpectedly", request_id_of(request))
    return error_response(
        request,
        500,
        "nubes.internal.error",
        f"internal error; the log has the details under request id {request_id_of(request)}",
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(E.NubesError)
    async def _nubes(request: Request, exc: E.NubesError) -> JSONResponse:
        return nubes_error(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid(request, exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return http_error(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected(request)
