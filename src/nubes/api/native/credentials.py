"""/v1/users/{user}/ec2-credentials and /v1/users/{user}/application-credentials
(``me`` stands for the caller)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from nubes.api.deps import Ctx, Svc
from nubes.api.native.common import Description, Name, Out, Strict
from nubes.domain.context import RequestContext

router = APIRouter(prefix="/v1/users/{user}", tags=["credentials"])


def _who(ctx: RequestContext, user: str) -> str | None:
    return None if user == "me" else user


class Ec2Create(Strict):
    project: str | None = Field(None, max_length=255, description="Default: the token's project.")


class Ec2Out(BaseModel):
    access: str
    secret: str
    user_id: str
    project_id: str
    created_at: datetime


class Ec2List(BaseModel):
    ec2_credentials: list[Ec2Out]


class AppCredCreate(Strict):
    name: Name
    description: Description = ""
    expires_at: datetime | None = None
    roles: list[Literal["admin", "member", "reader"]] | None = Field(
        None, description="Default: every role the token has."
    )


class AppCredOut(Out):
    id: str
    name: str
    description: str
    user_id: str
    project_id: str
    roles: str
    expires_at: datetime | None
    created_at: datetime


class AppCredCreated(AppCredOut):
    secret: str = Field(description="Shown once; it cannot be read again.")


class AppCredList(BaseModel):
    application_credentials: list[AppCredOut]


@router.post("/ec2-credentials", status_code=status.HTTP_201_CREATED, response_model=Ec2Out)
def create_ec2(user: str, body: Ec2Create, ctx: Ctx, svc: Svc) -> Ec2Out:
    c = svc.credentials.create_ec2(ctx, _who(ctx, user), body.project)
    return Ec2Out(**c.__dict__)


@router.get("/ec2-credentials", response_model=Ec2List)
def list_ec2(user: str, ctx: Ctx, svc: Svc) -> Ec2List:
    rows = svc.credentials.list_ec2(ctx, _who(ctx, user))
    return Ec2List(ec2_credentials=[Ec2Out(**c.__dict__) for c in rows])


@router.delete("/ec2-credentials/{access}", status_code=status.HTTP_204_NO_CONTENT)
def delete_ec2(user: str, access: str, ctx: Ctx, svc: Svc) -> None:
    svc.credentials.delete_ec2(ctx, access, _who(ctx, user))


@router.post(
    "/application-credentials", status_code=status.HTTP_201_CREATED, response_model=AppCredCreated
)
def create_app_cred(user: str, body: AppCredCreate, ctx: Ctx, svc: Svc) -> AppCredCreated:
    made = svc.credentials.create_app(
        ctx,
        body.name,
        description=body.description,
        expires_at=body.expires_at,
        roles=list(body.roles) if body.roles else None,
        user=_who(ctx, user),
    )
    return AppCredCreated(
        secret=made.secret, **AppCredOut.model_validate(made.credential).model_dump()
    )


@router.get("/application-credentials", response_model=AppCredList)
def list_app_creds(user: str, ctx: Ctx, svc: Svc) -> AppCredList:
    rows = svc.credentials.list_app(ctx, _who(ctx, user))
    return AppCredList(application_credentials=[AppCredOut.model_validate(r) for r in rows])


@router.delete("/application-credentials/{credential}", status_code=status.HTTP_204_NO_CONTENT)
def delete_app_cred(user: str, credential: str, ctx: Ctx, svc: Svc) -> None:
    svc.credentials.delete_app(ctx, credential, _who(ctx, user))
