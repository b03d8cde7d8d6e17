"""/v1/flavors"""

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
    Out,
    Strict,
    next_marker,
)

router = APIRouter(prefix="/v1/flavors", tags=["flavors"])

SpecKey = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_:.\-]+$")]
SpecValue = Annotated[str, Field(max_length=255)]


class FlavorCreate(Strict):
    name: Name
    vcpus: int = Field(ge=1, le=4096)
    ram_mb: int = Field(ge=1, le=16 * 1024 * 1024)
    disk_gb: int = Field(ge=0, le=1024 * 1024)
    ephemeral_gb: int = Field(0, ge=0, le=1024 * 1024)
    swap_mb: int = Field(0, ge=0, le=16 * 1024 * 1024)
    is_public: bool = True
    description: Description = ""
    extra_specs: dict[SpecKey, SpecValue] = Field(default_factory=dict, max_length=100)
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")] | None = (
        None
    )
    projects: list[Annotated[str, Field(max_length=255)]] = Field(
        default_factory=list, max_length=100, description="Projects with access (private only)."
    )


class FlavorUpdate(Strict):
    name: Name | None = None
    description: Description | None = None
    extra_specs: dict[SpecKey, SpecValue | None] | None = Field(
        None, max_length=100, description="Merged into the specs; a null value removes a key."
    )


class FlavorOut(Out):
    id: str
    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    ephemeral_gb: int
    swap_mb: int
    is_public: bool
    description: str
    extra_specs: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    generation: int


class FlavorList(BaseModel):
    flavors: list[FlavorOut]
    next_marker: str | None


class FlavorAccessOut(BaseModel):
    flavor_id: str
    projects: list[str]


class AccessChange(Strict):
    project: str = Field(min_length=1, max_length=255)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=FlavorOut)
def create_flavor(body: FlavorCreate, ctx: Ctx, svc: Svc) -> object:
    return svc.flavors.create(
        ctx,
        name=body.name,
        vcpus=body.vcpus,
        ram_mb=body.ram_mb,
        disk_gb=body.disk_gb,
        ephemeral_gb=body.ephemeral_gb,
        swap_mb=body.swap_mb,
        is_public=body.is_public,
        description=body.description,
        extra_specs=body.extra_specs,
        flavor_id=body.id,
        projects=body.projects,
    )


@router.get("", response_model=FlavorList)
def list_flavors(
    ctx: Ctx,
    svc: Svc,
    name: NameFilter = None,
    is_public: Annotated[bool | None, Query()] = None,
    limit: Limit = None,
    marker: Marker = None,
) -> FlavorList:
    rows = svc.flavors.list_flavors(ctx, name=name, is_public=is_public, limit=limit, marker=marker)
    return FlavorList(
        flavors=[FlavorOut.model_validate(r) for r in rows], next_marker=next_marker(rows, limit)
    )


@router.get("/{flavor}", response_model=FlavorOut)
def show_flavor(flavor: str, ctx: Ctx, svc: Svc) -> object:
    return svc.flavors.get(ctx, flavor)


@router.patch("/{flavor}", response_model=FlavorOut)
def update_flavor(flavor: str, body: FlavorUpdate, ctx: Ctx, svc: Svc) -> object:
    # null at the top level means "leave as is"; inside extra_specs it removes a key.
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    return svc.flavors.update(ctx, flavor, changes)


@router.delete("/{flavor}", status_code=status.HTTP_204_NO_CONTENT)
def delete_flavor(flavor: str, ctx: Ctx, svc: Svc) -> None:
    svc.flavors.delete(ctx, flavor)


@router.get("/{flavor}/access", response_model=FlavorAccessOut)
def list_access(flavor: str, ctx: Ctx, svc: Svc) -> FlavorAccessOut:
    row = svc.flavors.get(ctx, flavor)
    return FlavorAccessOut(flavor_id=row.id, projects=svc.flavors.access(ctx, flavor))


@router.post("/{flavor}/access", response_model=FlavorAccessOut)
def add_access(flavor: str, body: AccessChange, ctx: Ctx, svc: Svc) -> FlavorAccessOut:
    projects = svc.flavors.add_access(ctx, flavor, body.project)
    return FlavorAccessOut(flavor_id=svc.flavors.get(ctx, flavor).id, projects=projects)


@router.delete("/{flavor}/access/{project}", response_model=FlavorAccessOut)
def remove_access(flavor: str, project: str, ctx: Ctx, svc: Svc) -> FlavorAccessOut:
    projects = svc.flavors.remove_access(ctx, flavor, project)
    return FlavorAccessOut(flavor_id=svc.flavors.get(ctx, flavor).id, projects=projects)
