"""/v1/ports"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

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
from nubes.domain.context import RequestContext
from nubes.network.ports import FixedIp, PortInfo

router = APIRouter(prefix="/v1/ports", tags=["ports"])

Mac = Annotated[str, Field(min_length=1, max_length=32)]
Device = Annotated[str, Field(max_length=64)]


class FixedIpIn(Strict):
    subnet_id: Ref | None = None
    ip_address: Address | None = None


class AddressPair(Strict):
    ip_address: Address
    mac_address: Mac | None = None


class PortCreate(Strict):
    network_id: Ref
    name: Name | None = None
    description: Description = ""
    fixed_ips: list[FixedIpIn] | None = Field(
        None, max_length=16, description="Default: one address from the network's first subnet."
    )
    mac_address: Mac | None = Field(None, description="Default: fa:16:3e plus 3 random bytes.")
    security_groups: list[Ref] | None = Field(
        None, max_length=32, description="Default: the project's `default` group."
    )
    port_security_enabled: bool = True
    allowed_address_pairs: list[AddressPair] = Field(default_factory=list, max_length=32)
    device_owner: Device = ""
    device_id: Device = ""


class PortUpdate(Strict):
    name: Name | None = None
    description: Description | None = None
    security_groups: list[Ref] | None = Field(None, max_length=32)
    port_security_enabled: bool | None = None
    allowed_address_pairs: list[AddressPair] | None = Field(None, max_length=32)


class FixedIpOut(BaseModel):
    subnet_id: str
    ip_address: str


class PortOut(BaseModel):
    id: str
    name: str
    project_id: str
    network_id: str
    description: str
    mac_address: str
    fixed_ips: list[FixedIpOut]
    security_groups: list[str]
    port_security_enabled: bool
    allowed_address_pairs: list[dict[str, str]]
    device_owner: str
    device_id: str
    binding_host_id: str | None = Field(description="Cloud admins only.")
    dns_name: str
    status: str
    admin_state_up: bool
    created_at: datetime
    updated_at: datetime
    generation: int

    @classmethod
    def of(cls, info: PortInfo, ctx: RequestContext) -> PortOut:
        row = info.port
        return cls(
            id=row.id,
            name=row.name,
            project_id=row.project_id,
            network_id=row.network_id,
            description=row.description,
            mac_address=row.mac_address,
            fixed_ips=[FixedIpOut(subnet_id=s, ip_address=a) for s, a in info.fixed_ips],
            security_groups=info.security_groups,
            port_security_enabled=row.port_security_enabled,
            allowed_address_pairs=list(row.allowed_address_pairs),
            device_owner=row.device_owner,
            device_id=row.device_id,
            binding_host_id=row.host_id if ctx.is_cloud_admin else None,
            dns_name=row.dns_name,
            status=row.status,
            admin_state_up=row.admin_state_up,
            created_at=row.created_at,
            updated_at=row.updated_at,
            generation=row.generation,
        )


class PortList(BaseModel):
    ports: list[PortOut]
    next_marker: str | None


def _pairs(pairs: list[AddressPair] | None) -> list[dict[str, Any]] | None:
    return None if pairs is None else [p.model_dump(exclude_none=True) for p in pairs]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=PortOut)
def create_port(body: PortCreate, ctx: Ctx, svc: Svc) -> PortOut:
    fixed = (
        [FixedIp(subnet=f.subnet_id, ip_address=f.ip_address) for f in body.fixed_ips]
        if body.fixed_ips is not None
        else None
    )
    info = svc.ports.create(
        ctx,
        body.network_id,
        fixed_ips=fixed,
        security_groups=body.security_groups,
        name=body.name or "",
        description=body.description,
        mac_address=body.mac_address,
        port_security_enabled=body.port_security_enabled,
        allowed_address_pairs=_pairs(body.allowed_address_pairs) or [],
        device_owner=body.device_owner,
        device_id=body.device_id,
    )
    return PortOut.of(info, ctx)


@router.get("", response_model=PortList)
def list_ports(
    ctx: Ctx,
    svc: Svc,
    name: NameFilter = None,
    network_id: NetworkFilter = None,
    device_id: Annotated[str | None, Query(max_length=64)] = None,
    device_owner: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = None,
    marker: Marker = None,
) -> PortList:
    rows = svc.ports.list_ports(
        ctx,
        name=name,
        network=network_id,
        device_id=device_id,
        device_owner=device_owner,
        limit=limit,
        marker=marker,
    )
    return PortList(
        ports=[PortOut.of(r, ctx) for r in rows],
        next_marker=next_marker([r.port for r in rows], limit),
    )


@router.get("/{port}", response_model=PortOut)
def show_port(port: str, ctx: Ctx, svc: Svc) -> PortOut:
    return PortOut.of(svc.ports.get(ctx, port), ctx)


@router.patch("/{port}", response_model=PortOut)
def update_port(port: str, body: PortUpdate, ctx: Ctx, svc: Svc) -> PortOut:
    changes: dict[str, Any] = body.model_dump(exclude_none=True)
    if body.allowed_address_pairs is not None:
        changes["allowed_address_pairs"] = _pairs(body.allowed_address_pairs)
    return PortOut.of(svc.ports.update(ctx, port, changes), ctx)


@router.delete("/{port}", status_code=status.HTTP_204_NO_CONTENT)
def delete_port(port: str, ctx: Ctx, svc: Svc) -> None:
    svc.ports.delete(ctx, port)
