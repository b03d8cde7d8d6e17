"""/v1/hosts, /v1/host-tokens and /v1/services (cloud admins)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from nubes.api.deps import Ctx, Svc
from nubes.api.native.aggregates import HostSchedulingOut
from nubes.api.native.common import Limit, Marker, NameFilter, Out, Strict, next_marker
from nubes.api.services import Services
from nubes.domain.context import RequestContext
from nubes.domain.errors import InvalidInput
from nubes.hosts.service import SETTING_FIELDS
from nubes.store.models import Host

router = APIRouter(tags=["hosts"])


class JoinTokenCreate(Strict):
    uses: int = Field(1, ge=1, le=10000)
    expires_seconds: int = Field(3600, ge=60, le=30 * 86400)


class JoinTokenOut(BaseModel):
    token: str = Field(description="Give it to `nubes agent join URL --token`; shown once.")
    id: str
    uses: int
    expires_at: datetime


class HostOut(Out):
    id: str
    name: str
    state: str
    enabled: bool
    disabled_reason: str
    address: str
    driver: str
    arch: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    allocated_vcpus: int
    allocated_ram_mb: int
    allocated_disk_gb: int
    capabilities: dict[str, Any]
    metrics: dict[str, Any] = Field(description="Built-in and probe metrics (docs/probes.md).")
    probe_errors: dict[str, Any] = Field(description="Probe name → its last run's problem.")
    metrics_at: datetime | None = Field(description="When the metrics were recorded.")
    last_seen: datetime | None
    error: str
    created_at: datetime
    cpu_allocation_ratio: float | None = Field(None, description="Own override (null: inherit).")
    ram_allocation_ratio: float | None = None
    disk_allocation_ratio: float | None = None
    max_instances: int | None = None
    scheduling: HostSchedulingOut | None = Field(
        None, description="Effective zone, aggregates, ratios and cap (when showing one host)."
    )


class HostList(BaseModel):
    hosts: list[HostOut]
    next_marker: str | None


class HostUpdate(Strict):
    """Enable or disable, or override scheduling settings (null clears an override)."""

    enabled: bool | None = None
    reason: str = Field("", max_length=255)
    cpu_allocation_ratio: float | None = Field(None, gt=0, le=1000, description="vCPUs per CPU.")
    ram_allocation_ratio: float | None = Field(None, gt=0, le=1000)
    disk_allocation_ratio: float | None = Field(None, gt=0, le=1000)
    max_instances: int | None = Field(None, ge=1, le=1_000_000, description="Instance cap.")


class ProbeSyncOut(BaseModel):
    version: str = Field(description="SHA-256 of the probe bundle; agents fetch it on change.")
    probes: list[str] = Field(description="group/name of every probe synced.")
    changed: bool = Field(description="Whether the version differs from the last sync.")


class ServiceOut(BaseModel):
    name: str
    host: str
    kind: str
    state: str  # up | down
    last_seen: datetime | None
    detail: str


class ServiceList(BaseModel):
    services: list[ServiceOut]


@router.post("/v1/host-tokens", status_code=status.HTTP_201_CREATED, response_model=JoinTokenOut)
def create_join_token(body: JoinTokenCreate, ctx: Ctx, svc: Svc) -> JoinTokenOut:
    made = svc.hosts.create_join_token(ctx, uses=body.uses, ttl_seconds=body.expires_seconds)
    return JoinTokenOut(token=made.token, id=made.id, uses=made.uses, expires_at=made.expires_at)


@router.get("/v1/hosts", response_model=HostList)
def list_hosts(
    ctx: Ctx, svc: Svc, name: NameFilter = None, limit: Limit = None, marker: Marker = None
) -> HostList:
    rows = svc.hosts.list_hosts(ctx, name=name, limit=limit, marker=marker)
    return HostList(
        hosts=[HostOut.model_validate(r) for r in rows], next_marker=next_marker(rows, limit)
    )


@router.post("/v1/hosts/sync", response_model=ProbeSyncOut)
def sync_probes(ctx: Ctx, svc: Svc) -> ProbeSyncOut:
    """Send the probes in STATE_DIR/probes to every host (`onehost sync`): agents fetch them
    at their next heartbeat."""
    synced = svc.hosts.probes.sync(ctx)
    return ProbeSyncOut(version=synced.version, probes=synced.probes, changed=synced.changed)


@router.get("/v1/hosts/{host}", response_model=HostOut)
def show_host(host: str, ctx: Ctx, svc: Svc) -> HostOut:
    return _with_scheduling(svc, ctx, svc.hosts.get(ctx, host))


@router.patch("/v1/hosts/{host}", response_model=HostOut)
def update_host(host: str, body: HostUpdate, ctx: Ctx, svc: Svc) -> HostOut:
    given = body.model_dump(exclude_unset=True)
    settings = {k: given[k] for k in SETTING_FIELDS if k in given}
    if body.enabled is None and not settings:
        raise InvalidInput(f"give enabled, or one or more of {', '.join(SETTING_FIELDS)}")
    if body.enabled is not None:
        row = svc.hosts.set_enabled(ctx, host, body.enabled, body.reason)
    if settings:
        row = svc.hosts.update_settings(ctx, host, settings)
    return _with_scheduling(svc, ctx, row)


def _with_scheduling(svc: Services, ctx: RequestContext, row: Host) -> HostOut:
    shown = HostOut.model_validate(row)
    shown.scheduling = HostSchedulingOut.of(svc.aggregates.host_settings(ctx, row.id))
    return shown


@router.delete("/v1/hosts/{host}", status_code=status.HTTP_204_NO_CONTENT)
def delete_host(host: str, ctx: Ctx, svc: Svc) -> None:
    svc.hosts.delete(ctx, host)


@router.get("/v1/services", response_model=ServiceList)
def list_services(ctx: Ctx, svc: Svc) -> ServiceList:
    """The controller's loops and every agent, each up or down (`nova-manage service list`)."""
    rows = svc.hosts.services(ctx, svc.loops)
    return ServiceList(services=[ServiceOut(**row.__dict__) for row in rows])
