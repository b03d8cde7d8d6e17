"""/v1/routers (with their interfaces and gateway) and /v1/floating-ips"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from nubes.api.deps import Ctx, Svc
from nubes.api.native.common import (
    Description,
    Limit,
    Marker,
    Name,
    NameFilter,
    Strict,
    next_marker,
)
from nubes.api.native.networks import Address, NetworkFilter, Ref
from nubes.api.native.ports import FixedIpOut
from nubes.domain.context import RequestContext
from nubes.network.routers import RouterInfo
from nubes.store.models import FloatingIp

router = APIRouter(tags=["routers"])


class GatewayIn(Strict):
    network_id: Ref = Field(description="An external network (id or name).")
    enable_snat: bool = True


class RouterCreate(Strict):
    name: Name
    description: Description = ""
    external_gateway_info: GatewayIn | None = None
    admin_state_up: bool = True


class RouterUpdate(Strict):
    name: Name | None = None
    description: Description | None = None
    admin_state_up: bool | None = None


class InterfaceIn(Strict):
    subnet_id: Ref


class GatewayOut(BaseModel):
    network_id: str
    enable_snat: bool
    external_fixed_ips: list[FixedIpOut]


class InterfaceOut(BaseModel):
    subnet_id: str
    port_id: str
    ip_address: str


class RouterOut(BaseModel):
    id: str
    name: str
    project_id: str
    description: str
    admin_state_up: bool
    status: str
    external_gateway_info: GatewayOut | None
    interfaces: list[InterfaceOut]
    host_id: str | None = Field(description="Cloud admins only.")
    created_at: datetime
    updated_at: datetime
    generation: int

    @classmethod
    def of(cls, info: RouterInfo, ctx: RequestContext) -> RouterOut:
        row = info.router
        gateway = None
        if row.external_network_id is not None:
            gateway = GatewayOut(
                network_id=row.external_network_id,
                enable_snat=row.enable_snat,
                external_fixed_ips=[
                    FixedIpOut(subnet_id=s, ip_address=a) for s, a in info.gateway_ips
                ],
            )
        return cls(
            id=row.id,
            name=row.name,
            project_id=row.project_id,
            description=row.description,
            admin_state_up=row.admin_state_up,
            status=row.status,
            external_gateway_info=gateway,
            interfaces=[
                InterfaceOut(subnet_id=i.subnet_id, port_id=i.port_id, ip_address=i.ip_address)
                for i in info.interfaces
            ],
            host_id=row.host_id if ctx.is_cloud_admin else None,
            created_at=row.created_at,
            updated_at=row.updated_at,
            generation=row.generation,
        )


class RouterList(BaseModel):
    routers: list[RouterOut]
    next_marker: str | None


@router.post("/v1/routers", status_code=status.HTTP_201_CREATED, response_model=RouterOut)
def create_router(body: RouterCreate, ctx: Ctx, svc: Svc) -> RouterOut:
    gateway = body.external_gateway_info
    info = svc.routers.create(
        ctx,
        body.name,
        description=body.description,
        external_network=gateway.network_id if gateway else None,
        enable_snat=gateway.enable_snat if gateway else True,
        admin_state_up=body.admin_state_up,
    )
    return RouterOut.of(info, ctx)


@router.get("/v1/routers", response_model=RouterList)
def list_routers(
    ctx: Ctx, svc: Svc, name: NameFilter = None, limit: Limit = None, marker: Marker = None
) -> RouterList:
    rows = svc.routers.list_routers(ctx, name=name, limit=limit, marker=marker)
    return RouterList(
        routers=[RouterOut.of(r, ctx) for r in rows],
        next_marker=next_marker([r.router for r in rows], limit),
    )


@router.get("/v1/routers/{router_ref}", response_model=RouterOut)
def show_router(router_ref: str, ctx: Ctx, svc: Svc) -> RouterOut:
    return RouterOut.of(svc.routers.get(ctx, router_ref), ctx)


@router.patch("/v1/routers/{router_ref}", response_model=RouterOut)
def update_router(router_ref: str, body: RouterUpdate, ctx: Ctx, svc: Svc) -> RouterOut:
    changes = body.model_dump(exclude_none=True)
    return RouterOut.of(svc.routers.update(ctx, router_ref, changes), ctx)


@router.delete("/v1/routers/{router_ref}", status_code=status.HTTP_204_NO_CONTENT)
def delete_router(router_ref: str, ctx: Ctx, svc: Svc) -> None:
    svc.routers.delete(ctx, router_ref)


@router.post("/v1/routers/{router_ref}/interfaces", response_model=RouterOut)
def add_interface(router_ref: str, body: InterfaceIn, ctx: Ctx, svc: Svc) -> RouterOut:
    return RouterOut.of(svc.routers.add_interface(ctx, router_ref, body.subnet_id), ctx)


@router.delete("/v1/routers/{router_ref}/interfaces/{subnet}", response_model=RouterOut)
def remove_interface(router_ref: str, subnet: str, ctx: Ctx, svc: Svc) -> RouterOut:
    return RouterOut.of(svc.routers.remove_interface(ctx, router_ref, subnet), ctx)


@router.put("/v1/routers/{router_ref}/gateway", response_model=RouterOut)
def set_gateway(router_ref: str, body: GatewayIn, ctx: Ctx, svc: Svc) -> RouterOut:
    info = svc.routers.set_gateway(ctx, router_ref, body.network_id, enable_snat=body.enable_snat)
    return RouterOut.of(info, ctx)


@router.delete("/v1/routers/{router_ref}/gateway", response_model=RouterOut)
def clear_gateway(router_ref: str, ctx: Ctx, svc: Svc) -> RouterOut:
    return RouterOut.of(svc.routers.clear_gateway(ctx, router_ref), ctx)


# floating IPs -----------------------------------------------------------------------------


class FloatingIpCreate(Strict):
    floating_network_id: Ref
    port_id: Ref | None = Field(None, description="Associate at once with this port.")
    fixed_ip_address: Address | None = None
    floating_ip_address: Address | None = Field(None, description="Cloud admins only.")
    description: Description = ""


class Association(Strict):
    port_id: Ref | None = Field(description="null: disassociate.")
    fixed_ip_address: Address | None = Field(
        None, description="Which of the port's addresses (default: its first IPv4 one)."
    )


class FloatingIpOut(BaseModel):
    id: str
    project_id: str
    description: str
    floating_network_id: str
    floating_ip_address: str
    port_id: str | None
    fixed_ip_address: str | None
    router_id: str | None
    status: str
    created_at: datetime
    updated_at: datetime
    generation: int

    @classmethod
    def of(cls, row: FloatingIp) -> FloatingIpOut:
        return cls.model_validate(row, from_attributes=True)


class FloatingIpList(BaseModel):
    floating_ips: list[FloatingIpOut]
    next_marker: str | None


@router.post("/v1/floating-ips", status_code=status.HTTP_201_CREATED, response_model=FloatingIpOut)
def create_floating_ip(body: FloatingIpCreate, ctx: Ctx, svc: Svc) -> FloatingIpOut:
    row = svc.floating_ips.create(
        ctx,
        body.floating_network_id,
        port=body.port_id,
        fixed_ip_address=body.fixed_ip_address,
        floating_ip_address=body.floating_ip_address,
        description=body.description,
    )
    return FloatingIpOut.of(row)


@router.get("/v1/floating-ips", response_model=FloatingIpList)
def list_floating_ips(
    ctx: Ctx,
    svc: Svc,
    floating_network_id: NetworkFilter = None,
    port_id: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = None,
    marker: Marker = None,
) -> FloatingIpList:
    rows = svc.floating_ips.list_floating_ips(
        ctx, network=floating_network_id, port=port_id, limit=limit, marker=marker
    )
    return FloatingIpList(
        floating_ips=[FloatingIpOut.of(r) for r in rows], next_marker=next_marker(rows, limit)
    )


@router.get("/v1/floating-ips/{fip}", response_model=FloatingIpOut)
def show_floating_ip(fip: str, ctx: Ctx, svc: Svc) -> FloatingIpOut:
    return FloatingIpOut.of(svc.floating_ips.get(ctx, fip))


@router.put("/v1/floating-ips/{fip}/association", response_model=FloatingIpOut)
def associate(fip: str, body: Association, ctx: Ctx, svc: Svc) -> FloatingIpOut:
    row = svc.floating_ips.associate(ctx, fip, body.port_id, body.fixed_ip_address)
    return FloatingIpOut.of(row)


@router.delete("/v1/floating-ips/{fip}/association", response_model=FloatingIpOut)
def disassociate(fip: str, ctx: Ctx, svc: Svc) -> FloatingIpOut:
    return FloatingIpOut.of(svc.floating_ips.associate(ctx, fip, None))


@router.delete("/v1/floating-ips/{fip}", status_code=status.HTTP_204_NO_CONTENT)
def delete_floating_ip(fip: str, ctx: Ctx, svc: Svc) -> None:
    svc.floating_ips.delete(ctx, fip)
