"""/v1/aggregates (cloud admins): host aggregates, their metadata, zone and hosts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from nubes.api.deps import Ctx, Svc
from nubes.api.native.common import Limit, Marker, Name, NameFilter, Strict, next_marker
from nubes.hosts.aggregates import AggregateView, HostSchedulingSettings

router = APIRouter(prefix="/v1/aggregates", tags=["aggregates"])

ZoneName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="An availability zone: letters, digits and _ . - (1 to 64).",
    ),
]
MetaKey = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_:.\-]+$")]
MetaValue = Annotated[str, Field(max_length=255)]
METADATA_HELP = (
    "Matched against flavor extra specs. Numbers > 0: cpu_allocation_ratio, "
    "ram_allocation_ratio, disk_allocation_ratio (≤ 1000); max_instances_per_host: a whole "
    "number ≥ 1."
)


class AggregateCreate(Strict):
    name: Name
    availability_zone: ZoneName | None = None
    metadata: dict[MetaKey, MetaValue] = Field(
        default_factory=dict, max_length=100, description=METADATA_HELP
    )


class AggregateUpdate(Strict):
    name: Name | None = None
    availability_zone: ZoneName | None = Field(
        None, description="The new zone; null takes the aggregate out of any zone."
    )
    metadata: dict[MetaKey, MetaValue | None] | None = Field(
        None, max_length=100, description="Merged into the metadata; a null value removes a key."
    )


class HostRef(Strict):
    host: str = Field(min_length=1, max_length=255, description="Host id or name.")


class AggregateOut(BaseModel):
    id: str
    name: str
    availability_zone: str | None
    metadata: dict[str, Any]
    hosts: list[str] = Field(description="Names of its hosts.")
    created_at: datetime
    updated_at: datetime
    generation: int

    @classmethod
    def of(cls, view: AggregateView) -> AggregateOut:
        row = view.aggregate
        return cls(
            id=row.id,
            name=row.name,
            availability_zone=row.availability_zone,
            metadata=row.aggregate_metadata,
            hosts=list(view.hosts),
            created_at=row.created_at,
            updated_at=row.updated_at,
            generation=row.generation,
        )


class AggregateList(BaseModel):
    aggregates: list[AggregateOut]
    next_marker: str | None


class HostSchedulingOut(BaseModel):
    """A host's effective scheduling settings (shown with the host)."""

    availability_zone: str
    aggregates: list[str]
    metadata: dict[str, str] = Field(
        description="Merged over its aggregates; for a key set by several, the smallest number."
    )
    cpu_allocation_ratio: float
    ram_allocation_ratio: float
    disk_allocation_ratio: float
    max_instances: int | None
    sources: dict[str, str] = Field(
        description="Where each value comes from: host, aggregate NAME or default."
    )

    @classmethod
    def of(cls, settings: HostSchedulingSettings) -> HostSchedulingOut:
        return cls(
            availability_zone=settings.zone,
            aggregates=list(settings.aggregates),
            metadata=dict(settings.metadata),
            cpu_allocation_ratio=settings.cpu_allocation_ratio,
            ram_allocation_ratio=settings.ram_allocation_ratio,
            disk_allocation_ratio=settings.disk_allocation_ratio,
            max_instances=settings.max_instances,
            sources=dict(settings.sources),
        )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=AggregateOut)
def create_aggregate(body: AggregateCreate, ctx: Ctx, svc: Svc) -> AggregateOut:
    made = svc.aggregates.create(
        ctx, name=body.name, zone=body.availability_zone, metadata=body.metadata
    )
    return AggregateOut.of(made)


@router.get("", response_model=AggregateList)
def list_aggregates(
    ctx: Ctx,
    svc: Svc,
    name: NameFilter = None,
    availability_zone: Annotated[
        str | None, Query(max_length=64, description="Only aggregates in this zone.")
    ] = None,
    limit: Limit = None,
    marker: Marker = None,
) -> AggregateList:
    views = svc.aggregates.list_aggregates(
        ctx, name=name, zone=availability_zone, limit=limit, marker=marker
    )
    return AggregateList(
        aggregates=[AggregateOut.of(v) for v in views],
        next_marker=next_marker([v.aggregate for v in views], limit),
    )


@router.get("/{aggregate}", response_model=AggregateOut)
def show_aggregate(aggregate: str, ctx: Ctx, svc: Svc) -> AggregateOut:
    return AggregateOut.of(svc.aggregates.get(ctx, aggregate))


@router.patch("/{aggregate}", response_model=AggregateOut)
def update_aggregate(aggregate: str, body: AggregateUpdate, ctx: Ctx, svc: Svc) -> AggregateOut:
    changes = body.model_dump(exclude_unset=True)
    if changes.get("name", "") is None:
        del changes["name"]  # null leaves the name as it is; for the zone it means "none"
    return AggregateOut.of(svc.aggregates.update(ctx, aggregate, changes))


@router.delete("/{aggregate}", status_code=status.HTTP_204_NO_CONTENT)
def delete_aggregate(aggregate: str, ctx: Ctx, svc: Svc) -> None:
    svc.aggregates.delete(ctx, aggregate)


@router.post("/{aggregate}/hosts", response_model=AggregateOut)
def add_host(aggregate: str, body: HostRef, ctx: Ctx, svc: Svc) -> AggregateOut:
    return AggregateOut.of(svc.aggregates.add_host(ctx, aggregate, body.host))


@router.delete("/{aggregate}/hosts/{host}", response_model=AggregateOut)
def remove_host(aggregate: str, host: str, ctx: Ctx, svc: Svc) -> AggregateOut:
    return AggregateOut.of(svc.aggregates.remove_host(ctx, aggregate, host))
