"""/v1/projects"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, computed_field

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

router = APIRouter(prefix="/v1/projects", tags=["projects"])


class ProjectCreate(Strict):
    name: Name
    description: Description = ""
    enabled: bool = True


class ProjectUpdate(Strict):
    name: Name | None = None
    description: Description | None = None
    enabled: bool | None = None


class ProjectOut(Out):
    id: str
    name: str
    description: str
    enabled: bool
    is_admin_project: bool
    created_at: datetime
    updated_at: datetime
    generation: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> str:
        return "enabled" if self.enabled else "disabled"


class ProjectList(BaseModel):
    projects: list[ProjectOut]
    next_marker: str | None


StatusFilter = Annotated[Literal["enabled", "disabled"] | None, Query()]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProjectOut)
def create_project(body: ProjectCreate, ctx: Ctx, svc: Svc) -> object:
    return svc.projects.create(ctx, body.name, body.description, body.enabled)


@router.get("", response_model=ProjectList)
def list_projects(
    ctx: Ctx,
    svc: Svc,
    name: NameFilter = None,
    status: StatusFilter = None,
    limit: Limit = None,
    marker: Marker = None,
) -> ProjectList:
    enabled = None if status is None else status == "enabled"
    rows = svc.projects.list_projects(ctx, name=name, enabled=enabled, limit=limit, marker=marker)
    return ProjectList(
        projects=[ProjectOut.model_validate(r) for r in rows], next_marker=next_marker(rows, limit)
    )


@router.get("/{project}", response_model=ProjectOut)
def show_project(project: str, ctx: Ctx, svc: Svc) -> object:
    return svc.projects.get(ctx, project)


@router.patch("/{project}", response_model=ProjectOut)
def update_project(project: str, body: ProjectUpdate, ctx: Ctx, svc: Svc) -> object:
    return svc.projects.update(ctx, project, body.model_dump(exclude_none=True))


@router.delete("/{project}", status_code=status.HTTP_204_NO_CONTENT)
def delete_project(project: str, ctx: Ctx, svc: Svc) -> None:
    svc.projects.delete(ctx, project)
