"""/v1/servers: instances (VMs and containers). Long actions answer 202 with the instance in
its transitional state; poll it (or `nubes server create --wait`).

Create and delete are ``async`` and hand the service call to a worker thread themselves:
FastAPI runs a plain ``def`` route in one too, but then validates its answer in a second hop to
a worker thread, a cost on every boot and delete for nothing (rendering here is pure CPU)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field, model_validator

from nubes.api.deps import Ctx, Svc
from nubes.api.native.common import Limit, Marker, Name, NameFilter, Out, Strict, next_marker
from nubes.domain.context import RequestContext
from nubes.network.instance_ports import NicRequest
from nubes.store.models import Instance

router = APIRouter(prefix="/v1/servers", tags=["servers"])


class NicIn(Strict):
    network: str | None = Field(None, min_length=1, max_length=64, description="Network.")
    port: str | None = Field(None, min_length=1, max_length=64, description="A made port.")
    fixed_ip: str | None = Field(
        None, min_length=1, max_length=64, description="With `network`: this address."
    )

    @model_validator(mode="after")
    def _one_of(self) -> NicIn:
        if (self.network is None) == (self.port is None):
            raise ValueError("give either network or port")
        if self.port is not None and self.fixed_ip is not None:
            raise ValueError("fixed_ip goes with network (a port has its own addresses)")
        return self


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
    availability_zone: str | None = Field(
        None, min_length=1, max_length=64, description="Place only on hosts of this zone."
    )
    group: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Server group id or name: its policy (affinity, anti-affinity, soft-…) "
        "applies to this placement.",
    )
    requirements: str | None = Field(
        None,
        max_length=1024,
        description="Hosts must satisfy this (OpenNebula REQUIREMENTS): FREE_CPU > 60 & "
        'HYPERVISOR = "qemu". See docs/scheduling.md.',
    )
    rank: str | None = Field(
        None,
        max_length=1024,
        description="Prefer hosts where this is highest (OpenNebula RANK): FREE_MEMORY, "
        "-RUNNING_VMS.",
    )
    config_drive: bool = Field(
        False, description="Attach a config drive (ISO 9660, label config-2) with metadata."
    )
    networks: Literal["auto", "none"] | list[NicIn] = Field(
        "auto",
        max_length=16,
        description="NICs, in order: each on a network (optionally with a fixed IP) or a port "
        "made beforehand. auto: one on the project's network (or the shared `default`), "
        "none if there is no such network; none: no NIC.",
    )


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
    availability_zone: str | None
    requirements: str | None
    rank: str | None
    config_drive: bool


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
async def create_servers(body: ServerCreate, ctx: Ctx, svc: Svc) -> ServerList:
    rows = await svc.db.call(
        svc.instances.create,
        ctx,
        body.name,
        flavor=body.flavor,
        image=body.image,
        keypair=body.keypair,
        user_data=body.user_data,
        metadata=body.metadata,
        count=body.count,
        zone=body.availability_zone,
        group=body.group,
        requirements=body.requirements,
        rank=body.rank,
        config_drive=body.config_drive,
        networks=body.networks
        if isinstance(body.networks, str)
        else [NicRequest(n.network, n.port, n.fixed_ip) for n in body.networks],
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
async def delete_server(server: str, ctx: Ctx, svc: Svc) -> ServerOut:
    return render(await svc.db.call(svc.instances.delete, ctx, server), ctx)


@router.get("/{server}/console", response_model=ConsoleOut)
def console_log(server: str, ctx: Ctx, svc: Svc) -> ConsoleOut:
    return ConsoleOut(log=svc.instances.console_log(ctx, server))
