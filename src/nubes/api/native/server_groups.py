"""/v1/server-groups: the project's groups of servers placed together or apart."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from nubes.api.deps import Ctx, Svc
from nubes.api.native.common import Limit, Marker, Name, NameFilter, Out, Strict, next_marker

router = APIRouter(prefix="/v1/server-groups", tags=["server groups"])

Policy = Literal["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"]


class ServerGroupCreate(Strict):
    name: Name
    policy: Policy = Field(
        description="affinity: one host for all; anti-affinity: a host each; soft-: if possible."
    )


class ServerGroupOut(Out):
    id: str
    name: str
    policy: str
    project_id: str
    user_id: str
    created_at: datetime


class MemberOut(BaseModel):
    id: str
    name: str
    state: str


class ServerGroupDetail(ServerGroupOut):
    members: list[MemberOut] = Field(description="Its servers that are not deleted.")


class ServerGroupList(BaseModel):
    server_groups: list[ServerGroupOut]
    next_marker: str | None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ServerGroupDetail)
def create_server_group(body: ServerGroupCreate, ctx: Ctx, svc: Svc) -> ServerGroupDetail:
    row = svc.server_groups.create(ctx, body.name, body.policy)
    return ServerGroupDetail(**ServerGroupOut.model_validate(row).model_dump(), members=[])


@router.get("", response_model=ServerGroupList)
def list_server_groups(
    ctx: Ctx,
    svc: Svc,
    name: NameFilter = None,
    all_projects: Annotated[
        bool, Query(description="Cloud admins: every project's groups.")
    ] = False,
    limit: Limit = None,
    marker: Marker = None,
) -> ServerGroupList:
    rows = svc.server_groups.list_groups(
        ctx, name=name, all_projects=all_projects, limit=limit, marker=marker
    )
    return ServerGroupList(
        server_groups=[ServerGroupOut.model_validate(r) for r in rows],
        next_marker=next_marker(rows, limit),
    )


@router.get("/{group}", response_model=ServerGroupDetail)
def show_server_group(group: str, ctx: Ctx, svc: Svc) -> ServerGroupDetail:
    detail = svc.server_groups.get(ctx, group)
    return ServerGroupDetail(
        **ServerGroupOut.model_validate(detail.group).model_dump(),
        members=[MemberOut(id=m.id, name=m.name, state=m.state) for m in detail.members],
    )


@router.delete("/{group}", status_code=status.HTTP_204_NO_CONTENT)
def delete_server_group(group: str, ctx: Ctx, svc: Svc) -> None:
    svc.server_groups.delete(ctx, group)
