"""FastAPI dependencies shared by every face: the services and the caller's context."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from nubes.api.errors import request_id_of
from nubes.api.services import Services
from nubes.domain.context import RequestContext
from nubes.domain.errors import NotAuthenticated

_token_header = APIKeyHeader(
    name="X-Auth-Token", auto_error=False, description="A token from POST /v1/auth/tokens"
)
_bearer = HTTPBearer(auto_error=False, description="The same token as a bearer token")


# Dependencies are ``async def``: FastAPI runs a plain ``def`` one in a worker thread, a hop
# (and a wait for a free thread) on every request. One that reads the database does it through
# ``Database.call`` (inline on SQLite, in a thread on PostgreSQL).


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def caller_token(
    header: Annotated[str | None, Depends(_token_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    return token_of(header, bearer.credentials if bearer else None)


def token_of(header: str | None, bearer: str | None) -> str:
    """The caller's token: ``X-Auth-Token``, else the ``Authorization: Bearer`` credential."""
    token = header or bearer
    if not token:
        raise NotAuthenticated(
            "no token: send X-Auth-Token (get one with POST /v1/auth/tokens or `nubes login`)"
        )
    return token


async def get_context(
    request: Request,
    token: Annotated[str, Depends(caller_token)],
    services: Annotated[Services, Depends(get_services)],
) -> RequestContext:
    return await services.db.call(services.auth.validate, token, request_id=request_id_of(request))


Ctx = Annotated[RequestContext, Depends(get_context)]
Svc = Annotated[Services, Depends(get_services)]
