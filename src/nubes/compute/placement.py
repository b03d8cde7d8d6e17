"""Simple placement until the scheduler lands: the first host, by name, with room.

Claims go through a compare-and-swap on the host's ``generation`` (Placement's trick): two
concurrent creates that both picked the same host cannot both win, so a host is never
overbooked; the loser re-reads and tries again. When nothing fits, the reason says why, in
aggregate ("0 of 3 hosts fit: 2 not enough RAM (need 2048 MB, largest free 1024 MB), 1 down").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubes.config import Settings
from nubes.domain.errors import GenerationConflict
from nubes.store.cas import compare_and_swap
from nubes.store.models import Host

MAX_ATTEMPTS = 20
#: How many hosts with room the database hands back per claim.
CANDIDATES = 16


@dataclass(frozen=True)
class PlacementRequest:
    vcpus: int
    ram_mb: int
    disk_gb: int
    image_kinds: tuple[str, ...]  # what the image offers: "disk", "rootfs"


@dataclass(frozen=True)
class Outcome:
    host: Host | None
    image_kind: str = ""
    reason: str = ""


def _free(host: Host, settings: Settings) -> tuple[int, int, int]:
    return (
        int(host.vcpus * settings.cpu_allocation_ratio) - host.allocated_vcpus,
        int(host.ram_mb * settings.ram_allocation_ratio) - host.allocated_ram_mb,
        int(host.disk_gb * settings.disk_allocation_ratio) - host.allocated_disk_gb,
    )


def _why_not(host: Host, request: PlacementRequest, settings: Settings) -> str | None:
    if not host.enabled:
        return "disabled"
    if host.state != "monitored":
        return "down"
    runs = set(host.capabilities.get("image_kinds", []))
    if not runs & set(request.image_kinds):
        return f"cannot run this image ({'/'.join(request.image_kinds) or 'no files'})"
    vcpus, ram, disk = _free(host, settings)
    if ram < request.ram_mb:
        return "not enough RAM"
    if vcpus < request.vcpus:
        return "not enough vCPUs"
    if disk < request.disk_gb:
        return "not enough disk"
    return None


def _candidates(session: Session, request: PlacementRequest, settings: Settings) -> list[Host]:
    """Hosts that are up, enabled and have room, filtered by the database (so a claim reads a
    few rows, not every host); the image-kind check is done on these few in Python."""
    return list(
        session.scalars(
            select(Host)
            .where(
                Host.enabled,
                Host.state == "monitored",
                Host.vcpus * settings.cpu_allocation_ratio - Host.allocated_vcpus >= request.vcpus,
                Host.ram_mb * settings.ram_allocation_ratio - Host.allocated_ram_mb
                >= request.ram_mb,
                Host.disk_gb * settings.disk_allocation_ratio - Host.allocated_disk_gb
                >= request.disk_gb,
            )
            .order_by(Host.name)
            .limit(CANDIDATES)
            .execution_options(populate_existing=True)
        )
    )


def claim(session: Session, request: PlacementRequest, settings: Settings) -> Outcome:
    for _ in range(MAX_ATTEMPTS):
        candidates = _candidates(session, request, settings)
        chosen = next((h for h in candidates if _why_not(h, request, settings) is None), None)
        if chosen is None and len(candidates) == CANDIDATES:
            # The first few with room cannot run this image: look at every host.
            hosts = list(
                session.scalars(
                    select(Host).order_by(Host.name).execution_options(populate_existing=True)
                )
            )
            chosen = next((h for h in hosts if _why_not(h, request, settings) is None), None)
        if chosen is None:
            hosts = list(session.scalars(select(Host).order_by(Host.name)))
            reasons = Counter(
                why for h in hosts if (why := _why_not(h, request, settings)) is not None
            )
            return Outcome(None, reason=_explain(hosts, reasons, request, settings))
        try:
            compare_and_swap(
                session,
                Host,
                chosen.id,
                chosen.generation,
                {
                    "allocated_vcpus": chosen.allocated_vcpus + request.vcpus,
                    "allocated_ram_mb": chosen.allocated_ram_mb + request.ram_mb,
                    "allocated_disk_gb": chosen.allocated_disk_gb + request.disk_gb,
                },
            )
        except GenerationConflict:
            continue
        kind = _image_kind(chosen, request)
        return Outcome(chosen, kind)
    return Outcome(None, reason="every suitable host changed while placing; try again")


#: The image file a driver runs natively; others it can only convert (containers from disks).
NATIVE_KIND = {"lxc": "rootfs", "qemu": "disk"}


def _image_kind(host: Host, request: PlacementRequest) -> str:
    runs = set(host.capabilities.get("image_kinds", []))
    offered = [k for k in request.image_kinds if k in runs]
    native = NATIVE_KIND.get(host.driver)
    return native if native in offered else offered[0]


def release(session: Session, host_id: str, request: PlacementRequest) -> None:
    for _ in range(MAX_ATTEMPTS):
        host = session.scalar(
            select(Host).where(Host.id == host_id).execution_options(populate_existing=True)
        )
        if host is None:
            return
        try:
            compare_and_swap(
                session,
                Host,
                host.id,
                host.generation,
                {
                    "allocated_vcpus": max(0, host.allocated_vcpus - request.vcpus),
                    "allocated_ram_mb": max(0, host.allocated_ram_mb - request.ram_mb),
                    "allocated_disk_gb": max(0, host.allocated_disk_gb - request.disk_gb),
                },
            )
            return
        except GenerationConflict:
            continue
    raise GenerationConflict(f"host {host_id} kept changing while releasing resources")


def _explain(
    hosts: list[Host], reasons: Counter[str], request: PlacementRequest, settings: Settings
) -> str:
    if not hosts:
        return "no compute hosts: join one with `nubes host token create` and `nubes agent join`"
    parts = []
    for why, count in reasons.most_common():
        detail = ""
        if why == "not enough RAM":
            largest = max(_free(h, settings)[1] for h in hosts)
            detail = f" (need {request.ram_mb} MB, largest free {max(largest, 0)} MB)"
        elif why == "not enough vCPUs":
            largest = max(_free(h, settings)[0] for h in hosts)
            detail = f" (need {request.vcpus}, largest free {max(largest, 0)})"
        elif why == "not enough disk":
            largest = max(_free(h, settings)[2] for h in hosts)
            detail = f" (need {request.disk_gb} GB, largest free {max(largest, 0)} GB)"
        parts.append(f"{count} {why}{detail}")
    return f"0 of {len(hosts)} hosts fit: " + ", ".join(parts)
