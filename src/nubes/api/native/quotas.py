"""/v1/quotas"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field, RootModel

from nubes.api.deps import Ctx, Svc

router = APIRouter(prefix="/v1/quotas", tags=["quotas"])


class QuotaLimits(RootModel[dict[str, int]]):
    """Resource name → limit (-1: unlimited)."""


class QuotaUpdate(BaseModel):
    limits: dict[str, int] = Field(description="Resource name → new limit (-1: unlimited).")

    model_config = {"extra": "forbid"}


class QuotaOut(BaseModel):
    project_id: str
    project_name: str
    limits: dict[str, int]
    in_use: dict[str, int]


@router.get("/defaults", response_model=QuotaLimits)
def show_defaults(ctx: Ctx, svc: Svc) -> QuotaLimits:
    return QuotaLimits(svc.quotas.defaults(ctx))


@router.get("/{project}", response_model=QuotaOut)
def show_quota(project: str, ctx: Ctx, svc: Svc) -> QuotaOut:
    q = svc.quotas.show(ctx, project)
    return QuotaOut(**q.__dict__)


@router.patch("/{project}", response_model=QuotaOut)
def update_quota(project: str, body: QuotaUpdate, ctx: Ctx, svc: Svc) -> QuotaOut:
    q = svc.quotas.update(ctx, project, body.limits)
    return QuotaOut(**q.__dict__)
