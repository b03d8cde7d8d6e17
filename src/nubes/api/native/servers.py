"""/v1/servers: instances (VMs and containers). Long actions answer 202 with the instance in
its transitional state; poll it (or `nubes server create --wait`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from nubes.api.deps import Ctx, Svc
from nubes.api.native.common import Limit, Marker, Name, NameFilter, Out, Strict, next_marker
from nubes.domain.context import RequestContext
from nubes.store.models import Instance

router = APIRouter(prefix="/v1/servers", tags=["servers"])


class ServerCreate(Strict):
    name: Name
    flavor: str = Field(min_length=1, max_length=64, description="Flavor id or name.")
    image: str = Field(min_length=1, max_length=64, description="Image id or name.")
    keypair: Name | None = None
    user_data: str | None = Field(None, max_length=65536)
    metadata: dict[Annotated[str, Field(max_length=255)], Annotated[str, Field(max_length=255)]] = (
        Field(default_factory=dict, max_length=128)
    )
    count: int = Field(1, ge=1, le=100, description="Several at once: NAME-1, NAME-2, …")


class ServerAction(Strict):
    action: Literal["start", "stop", "reboot", "reboot_hard"]


class ServerOut(Out):
    id: str
    name: str
    project_id: str
    user_id: str
    flavor_id: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    image_id: str
    image_kind: str
    keypair_name: str | None
    metadata: dict[str, Any] = Field(validation_alias="instance_metadata")
    state: str
    desired_power: str
    observed_power: str
    task: str | None
    task_deadline: datetime | None
    reason: str
    host_id: str | None = Field(description="Cloud admins only.")
    console: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    launched_at: datetime | None


class ServerList(BaseModel):
    servers: list[ServerOut]
    next_marker: str | None


class ConsoleOut(BaseModel):
    log: str


def render(row: Instance, ctx: RequestContext) -> ServerOut:
    out = ServerOut.model_validate(row)
    if not ctx.is_cloud_admin:
        out.host_id = None
    return out


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=ServerList)
def create_servers(body: ServerCreate, ctx: Ctx, svc: Svc) -> ServerList:
    rows = svc.instances.create(
        ctx,
        body.name,
        flavor=body.flavor,
        image=body.image,
        keypair=body.keypair,
        user_data=body.user_data,
        metadata=body.metadata,
        count=body.count,
    )
    return ServerList(servers=[render(r, ctx) for r in rows], next_marker=None)


@router.get("", response_model=ServerList)
def list_servers(
    ctx: Ctx,
    svc: Svc,
    name: NameFilter = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    all_projects: bool = False,
    limit: Limit = None,
    marker: Marker = None,
) -> ServerList:
    rows = svc.instances.list_instances(
        ctx, name=name, status=status, all_projects=all_projects, limit=limit, marker=marker
    )
    return ServerList(servers=[render(r, ctx) for r in rows], next_marker=next_marker(rows, limit))


@router.get("/{server}", response_model=ServerOut)
def show_server(server: str, ctx: Ctx, svc: Svc) -> ServerOut:
    return render(svc.instances.get(ctx, server), ctx)


@router.post("/{server}/action", status_code=status.HTTP_202_ACCEPTED, response_model=ServerOut)
def server_action(server: str, body: ServerAction, ctx: Ctx, svc: Svc) -> ServerOut:
    return render(svc.instances.action(ctx, server, body.action), ctx)


@router.delete("/{server}", status_code=status.HTTP_202_ACCEPTED, response_model=ServerOut)
def delete_server(server: str, ctx: Ctx, svc: Svc) -> ServerOut:
    return render(svc.instances.delete(ctx, server), ctx)


@router.get("/{server}/console", response_model=ConsoleOut)
def console_log(server: str, ctx: Ctx, svc: Svc) -> ConsoleOut:
    return ConsoleOut(log=svc.instances.console_log(ctx, server))
