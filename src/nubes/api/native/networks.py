"""/v1/networks and /v1/subnets (Neutron's field names, without the ``provider:`` and
``router:`` prefixes)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

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
from nubes.network.addresses import DEFAULT
from nubes.network.networks import NetworkInfo
from nubes.store.models import Subnet

router = APIRouter(tags=["networks"])

#: An address or CIDR as text; the service says precisely what is wrong with a bad one.
Address = Annotated[str, Field(min_length=1, max_length=64)]
Ref = Annotated[str, Field(min_length=1, max_length=255, description="An id or a name.")]
NetworkFilter = Annotated[
    str | None, Query(max_length=255, description="Only those on this network (id or name).")
]
PhysicalNetwork = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


class NetworkCreate(Strict):
    name: Name
    description: Description = ""
    network_type: Literal["local", "flat", "vxlan", "vlan"] = "vxlan"
    shared: bool = Field(False, description="Every project may use it (cloud admins).")
    router_external: bool = Field(
        False, description="Routers' gateways and floating IPs come from it (cloud admins)."
    )
    segmentation_id: int | None = Field(
        None, ge=1, le=16_777_215, description="VNI or VLAN id (cloud admins); vxlan: allocated."
    )
    physical_network: PhysicalNetwork | None = Field(None, description="flat and vlan only.")
    mtu: int | None = Field(None, ge=68, le=9216)
    admin_state_up: bool = True


class NetworkUpdate(Strict):
    name: Name | None = None
    description: Description | None = None
    admin_state_up: bool | None = None
    shared: bool | None = None
    router_external: bool | None = None


class NetworkOut(BaseModel):
    id: str
    name: str
    project_id: str
    description: str
    shared: bool
    router_external: bool
    network_type: str
    physical_network: str | None
    segmentation_id: int | None
    mtu: int
    admin_state_up: bool
    status: str
    subnets: list[str]
    created_at: datetime
    updated_at: datetime
    generation: int

    @classmethod
    def of(cls, info: NetworkInfo) -> NetworkOut:
        row = info.network
        return cls(
            id=row.id,
            name=row.name,
            project_id=row.project_id,
            description=row.description,
            shared=row.shared,
            router_external=row.router_external,
            network_type=row.network_type,
            physical_network=row.physical_network or None,
            segmentation_id=row.segmentation_id,
            mtu=row.mtu,
            admin_state_up=row.admin_state_up,
            status="ACTIVE",
            subnets=info.subnets,
            created_at=row.created_at,
            updated_at=row.updated_at,
            generation=row.generation,
        )


class NetworkList(BaseModel):
    networks: list[NetworkOut]
    next_marker: str | None


@router.post("/v1/networks", status_code=status.HTTP_201_CREATED, response_model=NetworkOut)
def create_network(body: NetworkCreate, ctx: Ctx, svc: Svc) -> NetworkOut:
    return NetworkOut.of(svc.networks.create(ctx, **body.model_dump(exclude_none=True)))


@router.get("/v1/networks", response_model=NetworkList)
def list_networks(
    ctx: Ctx,
    svc: Svc,
    name: NameFilter = None,
    shared: Annotated[bool | None, Query()] = None,
    router_external: Annotated[bool | None, Query()] = None,
    limit: Limit = None,
    marker: Marker = None,
) -> NetworkList:
    rows = svc.networks.list_networks(
        ctx, name=name, shared=shared, router_external=router_external, limit=limit, marker=marker
    )
    return NetworkList(
        networks=[NetworkOut.of(r) for r in rows],
        next_marker=next_marker([r.network for r in rows], limit),
    )


@router.get("/v1/networks/{network}", response_model=NetworkOut)
def show_network(network: str, ctx: Ctx, svc: Svc) -> NetworkOut:
    return NetworkOut.of(svc.networks.get(ctx, network))


@router.patch("/v1/networks/{network}", response_model=NetworkOut)
def update_network(network: str, body: NetworkUpdate, ctx: Ctx, svc: Svc) -> NetworkOut:
    changes = body.model_dump(exclude_none=True)
    return NetworkOut.of(svc.networks.update(ctx, network, changes))


@router.delete("/v1/networks/{network}", status_code=status.HTTP_204_NO_CONTENT)
def delete_network(network: str, ctx: Ctx, svc: Svc) -> None:
    svc.networks.delete(ctx, network)


# subnets ------------------------------------------------------------------------------------


class PoolIn(Strict):
    start: Address
    end: Address


class RouteIn(Strict):
    destination: Address
    nexthop: Address


class SubnetCreate(Strict):
    name: Name
    network_id: Ref
    cidr: Address
    ip_version: Literal[4, 6] | None = None
    gateway_ip: Address | None = Field(
        None, description="Default: the first address; null: no gateway."
    )
    allocation_pools: list[PoolIn] | None = Field(
        None, max_length=64, description="Default: the CIDR but its network, broadcast and gateway."
    )
    dns_nameservers: list[Address] = Field(default_factory=list, max_length=16)
    host_routes: list[RouteIn] = Field(default_factory=list, max_length=64)
    enable_dhcp: bool = True
    description: Description = ""


class SubnetUpdate(Strict):
    name: Name | None = None
    description: Description | None = None
    dns_nameservers: list[Address] | None = Field(None, max_length=16)
    host_routes: list[RouteIn] | None = Field(None, max_length=64)
    enable_dhcp: bool | None = None


class SubnetOut(BaseModel):
    id: str
    name: str
    project_id: str
    network_id: str
    description: str
    ip_version: int
    cidr: str
    gateway_ip: str | None
    allocation_pools: list[dict[str, str]]
    dns_nameservers: list[str]
    host_routes: list[dict[str, str]]
    enable_dhcp: bool
    created_at: datetime
    updated_at: datetime
    generation: int

    @classmethod
    def of(cls, row: Subnet) -> SubnetOut:
        return cls(
            id=row.id,
            name=row.name,
            project_id=row.project_id,
            network_id=row.network_id,
            description=row.description,
            ip_version=row.ip_version,
            cidr=row.cidr,
            gateway_ip=row.gateway_ip,
            allocation_pools=[{"start": a, "end": b} for a, b in row.allocation_pools],
            dns_nameservers=list(row.dns_nameservers),
            host_routes=[{"destination": d, "nexthop": n} for d, n in row.host_routes],
            enable_dhcp=row.enable_dhcp,
            created_at=row.created_at,
            updated_at=row.updated_at,
            generation=row.generation,
        )


class SubnetList(BaseModel):
    subnets: list[SubnetOut]
    next_marker: str | None


@router.post("/v1/subnets", status_code=status.HTTP_201_CREATED, response_model=SubnetOut)
def create_subnet(body: SubnetCreate, ctx: Ctx, svc: Svc) -> SubnetOut:
    gateway = body.gateway_ip if "gateway_ip" in body.model_fields_set else DEFAULT
    row = svc.subnets.create(
        ctx,
        body.name,
        network=body.network_id,
        cidr=body.cidr,
        ip_version=body.ip_version,
        gateway_ip=gateway,
        allocation_pools=(
            [(p.start, p.end) for p in body.allocation_pools]
            if body.allocation_pools is not None
            else None
        ),
        dns_nameservers=body.dns_nameservers,
        host_routes=[(r.destination, r.nexthop) for r in body.host_routes],
        enable_dhcp=body.enable_dhcp,
        description=body.description,
    )
    return SubnetOut.of(row)


@router.get("/v1/subnets", response_model=SubnetList)
def list_subnets(
    ctx: Ctx,
    svc: Svc,
    name: NameFilter = None,
    network_id: NetworkFilter = None,
    limit: Limit = None,
    marker: Marker = None,
) -> SubnetList:
    rows = svc.subnets.list_subnets(ctx, name=name, network=network_id, limit=limit, marker=marker)
    return SubnetList(subnets=[SubnetOut.of(r) for r in rows], next_marker=next_marker(rows, limit))


@router.get("/v1/subnets/{subnet}", response_model=SubnetOut)
def show_subnet(subnet: str, ctx: Ctx, svc: Svc) -> SubnetOut:
    return SubnetOut.of(svc.subnets.get(ctx, subnet))


@router.patch("/v1/subnets/{subnet}", response_model=SubnetOut)
def update_subnet(subnet: str, body: SubnetUpdate, ctx: Ctx, svc: Svc) -> SubnetOut:
    changes: dict[str, Any] = body.model_dump(exclude_none=True)
    if body.host_routes is not None:
        changes["host_routes"] = [(r.destination, r.nexthop) for r in body.host_routes]
    return SubnetOut.of(svc.subnets.update(ctx, subnet, changes))


@router.delete("/v1/subnets/{subnet}", status_code=status.HTTP_204_NO_CONTENT)
def delete_subnet(subnet: str, ctx: Ctx, svc: Svc) -> None:
    svc.subnets.delete(ctx, subnet)
