"""/v1/security-groups and /v1/security-group-rules"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from nubes.api.deps import Ctx, Svc
from nubes.api.native.common import (
    Description,
    Limit,
    Marker,
    Name,
    NameFilter,
    Out,
    Strict,
    next_marker,
)
from nubes.api.native.networks import Address, Ref
from nubes.network.security_groups import GroupInfo

router = APIRouter(tags=["security groups"])

Port = Annotated[int, Field(ge=0, le=65535)]


class GroupCreate(Strict):
    name: Name
    description: Description = ""


class GroupUpdate(Strict):
    name: Name | None = None
    description: Description | None = None


class RuleOut(Out):
    id: str
    security_group_id: str
    project_id: str
    description: str
    direction: str
    ethertype: str
    protocol: str | None
    port_range_min: int | None
    port_range_max: int | None
    remote_ip_prefix: str | None
    remote_group_id: str | None
    created_at: datetime


class GroupOut(BaseModel):
    id: str
    name: str
    project_id: str
    description: str
    security_group_rules: list[RuleOut]
    created_at: datetime
    updated_at: datetime
    generation: int

    @classmethod
    def of(cls, info: GroupInfo) -> GroupOut:
        row = info.group
        return cls(
            id=row.id,
            name=row.name,
            project_id=row.project_id,
            description=row.description,
            security_group_rules=[RuleOut.model_validate(r) for r in info.rules],
            created_at=row.created_at,
            updated_at=row.updated_at,
            generation=row.generation,
        )


class GroupList(BaseModel):
    security_groups: list[GroupOut]
    next_marker: str | None


@router.post("/v1/security-groups", status_code=status.HTTP_201_CREATED, response_model=GroupOut)
def create_group(body: GroupCreate, ctx: Ctx, svc: Svc) -> GroupOut:
    return GroupOut.of(svc.security_groups.create(ctx, body.name, body.description))


@router.get("/v1/security-groups", response_model=GroupList)
def list_groups(
    ctx: Ctx, svc: Svc, name: NameFilter = None, limit: Limit = None, marker: Marker = None
) -> GroupList:
    rows = svc.security_groups.list_groups(ctx, name=name, limit=limit, marker=marker)
    return GroupList(
        security_groups=[GroupOut.of(r) for r in rows],
        next_marker=next_marker([r.group for r in rows], limit),
    )


@router.get("/v1/security-groups/{group}", response_model=GroupOut)
def show_group(group: str, ctx: Ctx, svc: Svc) -> GroupOut:
    return GroupOut.of(svc.security_groups.get(ctx, group))


@router.patch("/v1/security-groups/{group}", response_model=GroupOut)
def update_group(group: str, body: GroupUpdate, ctx: Ctx, svc: Svc) -> GroupOut:
    changes = body.model_dump(exclude_none=True)
    return GroupOut.of(svc.security_groups.update(ctx, group, changes))


@router.delete("/v1/security-groups/{group}", status_code=status.HTTP_204_NO_CONTENT)
def delete_group(group: str, ctx: Ctx, svc: Svc) -> None:
    svc.security_groups.delete(ctx, group)


# rules --------------------------------------------------------------------------------------


class RuleCreate(Strict):
    security_group_id: Ref
    direction: Literal["ingress", "egress"]
    ethertype: Literal["IPv4", "IPv6"] = "IPv4"
    protocol: Annotated[str, Field(max_length=16)] | Annotated[int, Field(ge=0, le=255)] | None = (
        Field(None, description="tcp, udp, icmp, icmpv6, any (null) or an IP protocol number.")
    )
    port_range_min: Port | None = Field(None, description="tcp and udp only.")
    port_range_max: Port | None = Field(None, description="Default: port_range_min.")
    remote_ip_prefix: Address | None = None
    remote_group_id: Ref | None = Field(
        None, description="Members of this group (not with a prefix)."
    )
    description: Description = ""


class RuleList(BaseModel):
    security_group_rules: list[RuleOut]
    next_marker: str | None


@router.post(
    "/v1/security-group-rules", status_code=status.HTTP_201_CREATED, response_model=RuleOut
)
def create_rule(body: RuleCreate, ctx: Ctx, svc: Svc) -> object:
    return svc.security_groups.create_rule(
        ctx,
        body.security_group_id,
        direction=body.direction,
        ethertype=body.ethertype,
        protocol=None if body.protocol is None else str(body.protocol),
        port_range_min=body.port_range_min,
        port_range_max=body.port_range_max,
        remote_ip_prefix=body.remote_ip_prefix,
        remote_group=body.remote_group_id,
        description=body.description,
    )


@router.get("/v1/security-group-rules", response_model=RuleList)
def list_rules(
    ctx: Ctx,
    svc: Svc,
    security_group_id: Annotated[
        str | None, Query(max_length=255, description="Only this group's rules (id or name).")
    ] = None,
    limit: Limit = None,
    marker: Marker = None,
) -> RuleList:
    rows = svc.security_groups.list_rules(ctx, group=security_group_id, limit=limit, marker=marker)
    return RuleList(
        security_group_rules=[RuleOut.model_validate(r) for r in rows],
        next_marker=next_marker(rows, limit),
    )


@router.get("/v1/security-group-rules/{rule}", response_model=RuleOut)
def show_rule(rule: str, ctx: Ctx, svc: Svc) -> object:
    return svc.security_groups.get_rule(ctx, rule)


@router.delete("/v1/security-group-rules/{rule}", status_code=status.HTTP_204_NO_CONTENT)
def delete_rule(rule: str, ctx: Ctx, svc: Svc) -> None:
    svc.security_groups.delete_rule(ctx, rule)
