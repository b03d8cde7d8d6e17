"""/v1/agent: the face compute-node agents use. Authenticated by a host credential
(``Authorization: Bearer host.<id>.<secret>``), never by a user token."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from nubes.api.deps import Svc, caller_token
from nubes.api.native.common import Strict
from nubes.compute.instances import Report
from nubes.domain.errors import InvalidInput, NotAuthenticated, NotFound
from nubes.images.service import file_of
from nubes.store.models import Host, Instance

router = APIRouter(prefix="/v1/agent", tags=["agent"])
MAX_WAIT = 30.0


def current_host(svc: Svc, token: Annotated[str, Depends(caller_token)]) -> Host:
    return svc.hosts.authenticate(token)


AgentHost = Annotated[Host, Depends(current_host)]


class JoinRequest(Strict):
    token: str | None = Field(None, max_length=512, description="Join token (first join).")
    name: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    address: str = Field("", max_length=255)
    driver: str = Field(max_length=16)
    arch: str = Field("x86_64", max_length=16)
    vcpus: int = Field(ge=0)
    ram_mb: int = Field(ge=0)
    disk_gb: int = Field(ge=0)
    capabilities: dict[str, Any] = Field(default_factory=dict)


class JoinResponse(BaseModel):
    host_id: str
    name: str
    credential: str = Field(description="Empty on a re-join: keep the one you have.")
    config: dict[str, Any]


class Heartbeat(Strict):
    metrics: dict[str, Any] = Field(default_factory=dict)
    leaving: bool = False


class ImageRef(BaseModel):
    id: str
    kind: str
    format: str
    checksum: str
    size: int


class DesiredInstance(BaseModel):
    id: str
    name: str
    hostname: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    desired_power: str
    state: str
    task: str | None
    task_deadline: datetime | None = Field(description="Tells one action from the next.")
    image: ImageRef
    user_data: str | None
    metadata: dict[str, Any]
    public_keys: list[str]


class Desired(BaseModel):
    version: int
    instances: list[DesiredInstance]


class ReportIn(Strict):
    power: str = Field(pattern="^(absent|stopped|running|paused|crashed)$")
    phase: str | None = Field(None, pattern="^(building|booting)$")
    completed_task: str | None = Field(None, max_length=32)
    error: str | None = Field(None, max_length=4096)
    console: dict[str, Any] | None = None
    console_log: str | None = Field(None, max_length=1 << 20)


class ReportOut(BaseModel):
    known: bool


@router.post("/join", response_model=JoinResponse)
def join(body: JoinRequest, request: Request, svc: Svc) -> JoinResponse:
    facts: dict[str, Any] = {
        "address": body.address or (request.client.host if request.client else ""),
        "driver": body.driver,
        "capabilities": body.capabilities,
        "vcpus": body.vcpus,
        "ram_mb": body.ram_mb,
        "disk_gb": body.disk_gb,
        "arch": body.arch,
    }
    bearer = request.headers.get("authorization", "").partition(" ")[2]
    if bearer:
        joined = svc.hosts.rejoin(svc.hosts.authenticate(bearer), **facts)
    elif body.token:
        joined = svc.hosts.join(body.token, name=body.name, **facts)
    else:
        raise NotAuthenticated("give a join token (first join) or your host credential")
    return JoinResponse(
        host_id=joined.host.id,
        name=joined.host.name,
        credential=joined.credential,
        config=joined.config,
    )


@router.post("/heartbeat", response_model=ReportOut)
def heartbeat(body: Heartbeat, host: AgentHost, svc: Svc) -> ReportOut:
    svc.hosts.heartbeat(host, body.metrics, leaving=body.leaving)
    return ReportOut(known=True)


def _desired(svc: Any, host: Host) -> list[DesiredInstance]:
    rows: list[Instance] = svc.instances.desired_for_host(host.id)
    images = svc.images.get_many({row.image_id for row in rows})
    out = []
    for row in rows:
        image = images[row.image_id]
        disk = row.image_kind == "disk"
        out.append(
            DesiredInstance(
                id=row.id,
                name=row.name,
                hostname=row.name,
                vcpus=row.vcpus,
                ram_mb=row.ram_mb,
                disk_gb=row.disk_gb,
                desired_power=row.desired_power,
                state=row.state,
                task=row.task,
                task_deadline=row.task_deadline,
                image=ImageRef(
                    id=image.id,
                    kind=row.image_kind,
                    format=image.disk_format if disk else "tar",
                    checksum=(image.disk_checksum if disk else image.rootfs_checksum) or "",
                    size=image.disk_size if disk else image.rootfs_size,
                ),
                user_data=row.user_data,
                metadata=row.instance_metadata,
                public_keys=[row.public_key] if row.public_key else [],
            )
        )
    return out


@router.get("/desired", response_model=Desired)
async def desired(host: AgentHost, svc: Svc, seen: int = -1, wait: float = 0.0) -> Desired:
    """The desired state of every instance on this host. With ``wait``, a long poll: answers
    when the host's version passes ``seen``, or after ``wait`` seconds (at most 30)."""
    if not 0 <= wait <= MAX_WAIT:
        raise InvalidInput(f"wait: 0 to {MAX_WAIT:.0f} seconds")
    if wait > 0:
        await svc.notifier.wait(host.id, seen, wait)
    version = svc.notifier.version(host.id)
    instances = await asyncio.to_thread(_desired, svc, host)
    return Desired(version=version, instances=instances)


@router.post("/instances/{instance_id}/report", response_model=ReportOut)
def report(instance_id: str, body: ReportIn, host: AgentHost, svc: Svc) -> ReportOut:
    row = svc.instances.report(host, instance_id, Report(**body.model_dump()))
    return ReportOut(known=row is not None)


@router.get("/images/{image_id}/{kind}")
def image_file(image_id: str, kind: str, host: AgentHost, svc: Svc) -> FileResponse:
    if kind not in ("disk", "rootfs"):
        raise InvalidInput("kind: disk or rootfs")
    path = file_of(svc.images.get_for_host(image_id), kind)
    if path is None or not path.exists():
        raise NotFound(f"image {image_id} has no {kind} file", code="nubes.image.not_found")
    return FileResponse(path, media_type="application/octet-stream")
