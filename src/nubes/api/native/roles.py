"""/v1/roles and /v1/role-assignments; grants live at /v1/projects/{p}/users/{u}/roles/{r}."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel

from nubes.api.deps import Ctx, Svc
from nubes.api.native.common import Out
from nubes.domain.roles import Role
from nubes.identity import policy

router = APIRouter(tags=["roles"])


class RoleOut(BaseModel):
    name: str
    implies: list[str]


class RoleList(BaseModel):
    roles: list[RoleOut]


class AssignmentOut(Out):
    user_id: str
    project_id: str
    role: str
    created_at: datetime


class AssignmentList(BaseModel):
    role_assignments: list[AssignmentOut]


@router.get("/v1/roles", response_model=RoleList)
def list_roles(ctx: Ctx) -> RoleList:
    policy.enforce(ctx, "identity:role:list")
    return RoleList(
        roles=[RoleOut(name=r.name, implies=[x.name for x in Role if x < r]) for r in Role]
    )


@router.get("/v1/role-assignments", response_model=AssignmentList)
def list_assignments(
    ctx: Ctx,
    svc: Svc,
    user: Annotated[str | None, Query(max_length=255)] = None,
    project: Annotated[str | None, Query(max_length=255)] = None,
) -> AssignmentList:
    rows = svc.users.assignments(ctx, user=user, project=project)
    return AssignmentList(role_assignments=[AssignmentOut.model_validate(r) for r in rows])


@router.put(
    "/v1/projects/{project}/users/{user}/roles/{role}",
    response_model=AssignmentOut,
    status_code=status.HTTP_200_OK,
)
def grant_role(project: str, user: str, role: str, ctx: Ctx, svc: Svc) -> object:
    return svc.users.grant(ctx, user, project, role)


@router.delete(
    "/v1/projects/{project}/users/{user}/roles/{role}", status_code=status.HTTP_204_NO_CONTENT
)
def revoke_role(project: str, user: str, role: str, ctx: Ctx, svc: Svc) -> None:
    svc.users.revoke(ctx, user, project, role)
