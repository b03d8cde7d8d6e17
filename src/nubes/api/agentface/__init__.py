"""/v1/agent: the face compute-node agents use. Authenticated by a host credential
(``Authorization: Bearer host.<id>.<secret>``), never by a user token."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from nubes.api.deps import Svc, caller_token
from nubes.api.native.common import Strict
from nubes.api.services import Services
from nubes.compute.instances import Report
from nubes.compute.metadata import config_drive_files, hostname_of, metadata_answer, nic_data
from nubes.domain import netdesired
from nubes.domain.errors import InvalidInput, NotAuthenticated, NotFound
from nubes.images.service import file_of
from nubes.network.common import COMPUTE
from nubes.network.desired import host_networks, networked
from nubes.network.instance_ports import instance_nics, instances_nics
from nubes.store.models import Host, Instance, Port

router = APIRouter(prefix="/v1/agent", tags=["agent"])
MAX_WAIT = 30.0


async def host_of(svc: Services, token: str) -> Host:
    """The host a credential belongs to: from the credential cache in the event loop, or
    verified against the database."""
    cached = svc.hosts.cached(token)
    if cached is not None:
        return cached
    return await svc.db.call(svc.hosts.authenticate, token)


async def current_host(svc: Svc, token: Annotated[str, Depends(caller_token)]) -> Host:
    """Every agent request routed by FastAPI (the hot ones go through :mod:`.lane`)."""
    return await host_of(svc, token)


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
    metrics: dict[str, Any] = Field(
        default_factory=dict,
        description="NAME → number (HYPERVISOR and ARCH: strings); see docs/probes.md.",
    )
    probe_errors: dict[str, str] = Field(
        default_factory=dict, description="Probe name → what went wrong on its last run."
    )
    probes_version: str | None = Field(
        None, max_length=64, description="The probes version the agent has installed."
    )
    leaving: bool = False


class HeartbeatOut(BaseModel):
    known: bool
    probes_version: str = Field(
        description="The probes version to have; when it differs, GET /v1/agent/probes."
    )


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
    nics: list[dict[str, Any]] = Field(
        default_factory=list, description="The instance's NICs, in order (port id, MAC, …)."
    )
    config_drive: dict[str, str] | None = Field(
        None, description="The config drive's files: path -> base64 of the content; null: none."
    )


class Desired(BaseModel):
    version: int
    instances: list[DesiredInstance]
    networks: dict[str, Any] | None = Field(
        None, description="The host's networking (nubes.domain.netdesired.HostNetworks)."
    )
    unchanged: bool = Field(
        False,
        description="True when a long poll ended with nothing new since `seen`: `instances` "
        "is then empty and the agent keeps what it had.",
    )


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


async def heartbeat(svc: Services, host: Host, body: Heartbeat) -> HeartbeatOut:
    """``POST /v1/agent/heartbeat`` (served by :mod:`.lane`). Most beats change nothing that
    must be written now: they are taken in the event loop with no database and no worker
    thread (a thousand hosts send 200 a second)."""
    hosts = svc.hosts
    if not hosts.beat_in_memory(
        host, body.metrics, leaving=body.leaving, probe_errors=body.probe_errors
    ):
        await svc.db.call(
            hosts.heartbeat,
            host,
            body.metrics,
            leaving=body.leaving,
            probe_errors=body.probe_errors,
        )
    version = hosts.probes.fresh_version()
    if version is None:
        version = await svc.db.call(hosts.probes.version)
    return HeartbeatOut(known=True, probes_version=version)


@router.get("/probes", response_class=Response)
def probes_bundle(host: AgentHost, svc: Svc) -> Response:
    """This host's probes (common + its driver kind) as a tar; the version is in
    ``X-Nubes-Probes-Version``."""
    version, data = svc.hosts.probes.bundle(host.driver)
    return Response(
        data, media_type="application/x-tar", headers={"X-Nubes-Probes-Version": version}
    )


def _config_drive(row: Instance, nics: list[dict[str, Any]]) -> dict[str, str] | None:
    if not row.config_drive:
        return None
    files = config_drive_files(row, nics)
    return {path: base64.b64encode(content).decode() for path, content in files.items()}


def _desired(svc: Any, host: Host, metadata_url: str) -> Desired:
    """Read the host's instances and networks (the version is read first by the caller, so a
    change racing this read moves the version past what the agent is told). Every agent asks
    often: its instances and whether it has any networking come from a plain connection in
    two queries; an ORM session reads the networks and NICs only when there are some."""
    with svc.db.connection() as connection:
        rows = svc.instances.desired_with_images(connection, host.id)
        ids = [row.id for row, _ in rows]
        wired = networked(connection, host.id, ids)
    nics: dict[str, list[dict[str, Any]]] = {instance_id: [] for instance_id in ids}
    networks = netdesired.to_json(netdesired.HostNetworks(metadata_url=metadata_url))
    if wired:
        with svc.db.read() as session:
            networks = netdesired.to_json(host_networks(session, host.id, metadata_url))
            for instance_id, found in instances_nics(session, ids).items():
                nics[instance_id] = [nic_data(n) for n in found]
    out = []
    for row, image in rows:
        disk = row.image_kind == "disk"
        out.append(
            DesiredInstance(
                id=row.id,
                name=row.name,
                hostname=hostname_of(row),
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
                config_drive=_config_drive(row, nics[row.id]),
                nics=nics[row.id],
            )
        )
    return Desired(version=0, instances=out, networks=networks)


class DesiredQuery(BaseModel):
    seen: int = -1
    wait: float = 0.0


async def desired(svc: Services, host: Host, query: DesiredQuery, base_url: str) -> Desired:
    """``GET /v1/agent/desired?seen=&wait=`` (served by :mod:`.lane`): the desired state of
    every instance on this host. With ``wait``, a long poll: answers when the host's version
    passes ``seen``, or after ``wait`` seconds (at most 30)."""
    seen, wait = query.seen, query.wait
    if not 0 <= wait <= MAX_WAIT:
        raise InvalidInput(f"wait: 0 to {MAX_WAIT:.0f} seconds")
    if wait > 0:
        version = await svc.notifier.wait(host.id, seen, wait)
        if version == seen:
            # Nothing changed through this controller: spare the database (a thousand idle
            # hosts would re-read it every watch period). Agents still read in full now and
            # then, for changes made through other controllers.
            return Desired(version=version, instances=[], unchanged=True)
    version = svc.notifier.version(host.id)
    # the metadata proxy reaches this controller the way the agent does
    metadata_url = base_url.rstrip("/")
    answer = await svc.db.call(_desired, svc, host, metadata_url)
    answer.version = version
    return answer


async def report(svc: Services, host: Host, instance_id: str, body: ReportIn) -> ReportOut:
    """``POST /v1/agent/instances/{id}/report`` (served by :mod:`.lane`)."""
    seen = Report(**body.model_dump())
    row = await svc.db.call(svc.instances.report, host, instance_id, seen)
    return ReportOut(known=row is not None)


@router.get("/images/{image_id}/{kind}")
def image_file(image_id: str, kind: str, host: AgentHost, svc: Svc) -> FileResponse:
    if kind not in ("disk", "rootfs"):
        raise InvalidInput("kind: disk or rootfs")
    path = file_of(svc.images.get_for_host(image_id), kind)
    if path is None or not path.exists():
        raise NotFound(f"image {image_id} has no {kind} file", code="nubes.image.not_found")
    return FileResponse(path, media_type="application/octet-stream")


def _metadata_of(svc: Any, host: Host, port_id: str, path: str) -> tuple[str, bytes] | None:
    """Only a port bound to the asking host, of a live instance on that host: a proxy can
    never read another host's instances, whatever port id it names."""
    with svc.db.read() as session:
        port = session.get(Port, port_id)
        if port is None or port.host_id != host.id or port.device_owner != COMPUTE:
            return None
        row = session.get(Instance, port.device_id)
        if row is None or row.host_id != host.id or row.state in ("deleting", "deleted"):
            return None
        nics = [nic_data(nic) for nic in instance_nics(session, row.id)]
        return metadata_answer(row, nics, path, via_port_id=port.id)


@router.get("/metadata/{port_id}/{path:path}", response_class=Response)
async def metadata(port_id: str, path: str, host: AgentHost, svc: Svc) -> Response:
    """The metadata service's content for the instance behind ``port_id``, asked by this
    host's metadata proxy on the instance's behalf (the proxy knows the port by the
    connection's source address; the instance never talks to the controller)."""
    answer = await svc.db.call(_metadata_of, svc, host, port_id, path)
    if answer is None:
        raise NotFound(
            f"no metadata at {path!r} for port {port_id} on this host",
            code="nubes.metadata.not_found",
        )
    media_type, body = answer
    return Response(body, media_type=media_type)
