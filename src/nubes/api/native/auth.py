"""/v1/auth: issue, validate and revoke tokens; rotate the token keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status
from pydantic import BaseModel, Field

from nubes.api.deps import Ctx, Svc
from nubes.api.errors import request_id_of
from nubes.api.native.common import Ref, Strict
from nubes.domain.context import RequestContext
from nubes.domain.errors import InvalidInput
from nubes.identity import policy

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class TokenRequest(Strict):
    """Exactly one method: username + password, token, or application credential."""

    username: str | None = Field(None, max_length=255)
    password: str | None = Field(None, max_length=4096)
    token: str | None = Field(None, max_length=4096, description="Re-scope an existing token.")
    application_credential_id: str | None = Field(None, max_length=64)
    application_credential_secret: str | None = Field(None, max_length=4096)
    project: str | None = Field(
        None, max_length=255, description="Project name or id; default: the user's default."
    )


class TokenInfo(BaseModel):
    user: Ref
    project: Ref
    roles: list[str]
    is_admin: bool
    methods: list[str]
    expires_at: datetime
    audit_id: str


class IssuedTokenOut(TokenInfo):
    token: str


class RotatedKeys(BaseModel):
    primary_serial: int


def _info(ctx: RequestContext) -> TokenInfo:
    return TokenInfo(
        user=Ref(id=ctx.user_id or "", name=ctx.user_name),
        project=Ref(id=ctx.project_id or "", name=ctx.project_name),
        roles=sorted(r.name for r in ctx.roles),
        is_admin=ctx.is_cloud_admin,
        methods=list(ctx.methods),
        expires_at=datetime.fromtimestamp(ctx.expires_at, UTC),
        audit_id=ctx.audit_id or "",
    )


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=IssuedTokenOut)
def issue_token(
    body: TokenRequest, request: Request, response: Response, svc: Svc
) -> IssuedTokenOut:
    rid = request_id_of(request)
    methods = [
        name
        for name, present in (
            ("password", body.username is not None or body.password is not None),
            ("token", body.token is not None),
            ("application_credential", body.application_credential_id is not None),
        )
        if present
    ]
    if len(methods) != 1:
        raise InvalidInput(
            "give exactly one of: username + password, token, or application_credential_id + "
            "application_credential_secret"
        )
    if methods == ["password"]:
        if not body.username or body.password is None:
            raise InvalidInput("username and password: both are required")
        issued = svc.auth.authenticate_password(body.username, body.password, body.project, rid)
    elif methods == ["token"]:
        assert body.token is not None
        issued = svc.auth.authenticate_token(body.token, body.project, rid)
    else:
        if body.application_credential_secret is None or body.project is not None:
            raise InvalidInput(
                "application_credential_secret is required, and project is not allowed "
                "(the credential is bound to its project)"
            )
        assert body.application_credential_id is not None
        issued = svc.auth.authenticate_app_credential(
            body.application_credential_id, body.application_credential_secret, rid
        )
    response.headers["X-Subject-Token"] = issued.token
    return IssuedTokenOut(token=issued.token, **_info(issued.context).model_dump())


SubjectToken = Annotated[
    str | None,
    Header(alias="X-Subject-Token", max_length=4096, description="Default: the caller's token."),
]


@router.get("/tokens", response_model=TokenInfo)
def validate_token(ctx: Ctx, svc: Svc, request: Request, subject: SubjectToken = None) -> TokenInfo:
    policy.enforce(ctx, "identity:token:validate")
    if subject is None:
        return _info(ctx)
    return _info(svc.auth.validate(subject, request_id=request_id_of(request)))


@router.delete("/tokens", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(ctx: Ctx, svc: Svc, request: Request, subject: SubjectToken = None) -> None:
    token = subject or request.headers.get("x-auth-token") or ""
    if not token:
        auth = request.headers.get("authorization", "")
        token = auth.partition(" ")[2]
    svc.auth.revoke(ctx, token)


@router.post("/keys/rotate", response_model=RotatedKeys)
def rotate_keys(ctx: Ctx, svc: Svc) -> RotatedKeys:
    return RotatedKeys(primary_serial=svc.auth.rotate_keys(ctx))
