"""The agents' three hot routes, served without FastAPI's router and dependency solving.

A thousand hosts send 200 heartbeats a second, and every boot and delete costs each host a
long-poll answer and a report. Through FastAPI each of those paid 0.2-0.4 ms of CPU before
and after the handler (trying route patterns, solving a tree of five dependencies, building
and validating the answer twice), as much as the handler itself. This ASGI layer sits inside
the request id, metrics and body-limit middleware (so those still apply) and answers

- ``POST /v1/agent/heartbeat`` (:class:`~nubes.api.agentface.Heartbeat`),
- ``GET /v1/agent/desired?seen=&wait=`` (the long poll),
- ``POST /v1/agent/instances/{id}/report`` (:class:`~nubes.api.agentface.ReportIn`),

with the same models, handlers, authentication and error bodies as every other route
(:mod:`nubes.api.errors`). Anything else goes on to FastAPI.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from nubes.api import errors
from nubes.api.agentface import (
    DesiredQuery,
    Heartbeat,
    ReportIn,
    desired,
    heartbeat,
    host_of,
    report,
)
from nubes.api.deps import token_of
from nubes.api.services import Services
from nubes.domain.errors import NubesError
from nubes.store.models import Host

Handler = Callable[[Services, Host, Request, str], Awaitable[BaseModel]]


@dataclass(frozen=True)
class LaneRoute:
    """What :class:`nubes.api.middleware.MetricsMiddleware` labels a request with."""

    path: str
    method: str
    handler: Handler


async def _body(request: Request, model: type[BaseModel]) -> Any:
    raw = await request.body()
    try:
        if not raw:
            raise ValidationError.from_exception_data(
                model.__name__, [{"type": "missing", "loc": (), "input": None}]
            )
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _Invalid("body", exc) from exc


async def _heartbeat(svc: Services, host: Host, request: Request, _: str) -> BaseModel:
    return await heartbeat(svc, host, await _body(request, Heartbeat))


async def _desired(svc: Services, host: Host, request: Request, _: str) -> BaseModel:
    try:
        query = DesiredQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise _Invalid("query", exc) from exc
    return await desired(svc, host, query, str(request.base_url))


async def _report(svc: Services, host: Host, request: Request, instance_id: str) -> BaseModel:
    return await report(svc, host, instance_id, await _body(request, ReportIn))


class _Invalid(Exception):
    def __init__(self, where: str, exc: ValidationError) -> None:
        self.errors = [{**e, "loc": (where, *e["loc"])} for e in exc.errors()]


_EXACT = {
    "/v1/agent/heartbeat": LaneRoute("/v1/agent/heartbeat", "POST", _heartbeat),
    "/v1/agent/desired": LaneRoute("/v1/agent/desired", "GET", _desired),
}
_REPORT = LaneRoute("/v1/agent/instances/{instance_id}/report", "POST", _report)
_REPORT_PATH = re.compile(r"^/v1/agent/instances/([^/]+)/report$")
_JSON = [(b"content-type", b"application/json")]


class AgentLane:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route, arg = None, ""
        if scope["type"] == "http":
            path = scope["path"]
            route = _EXACT.get(path)
            if route is None and path.endswith("/report"):
                found = _REPORT_PATH.match(path)
                if found is not None:
                    route, arg = _REPORT, found.group(1)
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        request = Request(scope, receive)
        try:
            if scope["method"] != route.method:
                raise HTTPException(405)
            bearer = request.headers.get("authorization", "")
            scheme, _, credential = bearer.partition(" ")
            token = token_of(
                request.headers.get("x-auth-token"),
                credential.strip() if scheme.lower() == "bearer" else None,
            )
            host = await host_of(self.services, token)
            answer = await route.handler(self.services, host, request, arg)
        except NubesError as exc:
            response = errors.nubes_error(request, exc)
        except _Invalid as exc:
            response = errors.invalid(request, exc.errors)
        except HTTPException as exc:
            response = errors.http_error(request, exc)
        except Exception:
            response = errors.unexpected(request)
        else:
            body = answer.model_dump_json().encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*_JSON, (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await response(scope, receive, send)
