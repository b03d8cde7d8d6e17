"""/v1/availability-zones: every zone and whether it can take instances now (any user);
cloud admins also see each zone's hosts."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from nubes.api.deps import Ctx, Svc
from nubes.api.native.common import Limit, Marker, NameFilter, next_marker

router = APIRouter(prefix="/v1/availability-zones", tags=["availability zones"])


class ZoneOut(BaseModel):
    name: str
    available: bool = Field(description="At least one of its hosts is up and enabled.")
    hosts: list[str] | None = Field(description="Its hosts' names (cloud admins; else null).")


class ZoneList(BaseModel):
    availability_zones: list[ZoneOut]
    next_marker: str | None


@router.get("", response_model=ZoneList)
def list_zones(
    ctx: Ctx, svc: Svc, name: NameFilter = None, limit: Limit = None, marker: Marker = None
) -> ZoneList:
    zones = svc.aggregates.zones(ctx, name=name, limit=limit, marker=marker)
    return ZoneList(
        availability_zones=[
            ZoneOut(
                name=z.name,
                available=z.available,
                hosts=None if z.hosts is None else list(z.hosts),
            )
            for z in zones
        ],
        next_marker=next_marker(zones, limit, key="name"),
    )
