"""Terse snapshots and requests for scheduler tests: ``hosts(3, ram_mb=4096)`` is three
monitored, enabled hosts node-1..node-3 with room for the defaults of ``request()``."""

from __future__ import annotations

from typing import Any

from nubes.scheduler import HostView, Request, Snapshot, parse_rank, parse_requirements

DEFAULTS: dict[str, Any] = {
    "driver": "qemu",
    "vcpus": 8,
    "ram_mb": 8192,
    "disk_gb": 100,
    "image_kinds": frozenset({"disk", "rootfs"}),
}


def host(name: str, **fields: Any) -> HostView:
    values = {**DEFAULTS, **fields}
    values.setdefault("id", f"id-{name}")
    if "image_kinds" in fields:
        values["image_kinds"] = frozenset(fields["image_kinds"])
    return HostView(name=name, **values)


def hosts(n: int, prefix: str = "node-", start: int = 1, **fields: Any) -> list[HostView]:
    return [host(f"{prefix}{i}", **fields) for i in range(start, start + n)]


def snapshot(*groups: HostView | list[HostView]) -> Snapshot:
    flat: list[HostView] = []
    for group in groups:
        flat.extend(group if isinstance(group, list) else [group])
    return Snapshot.build(flat)


def request(
    vcpus: int = 1,
    ram_mb: int = 1024,
    disk_gb: int = 10,
    *,
    requirements: str | None = None,
    rank: str | None = None,
    **fields: Any,
) -> Request:
    return Request(
        vcpus=vcpus,
        ram_mb=ram_mb,
        disk_gb=disk_gb,
        requirements=None if requirements is None else parse_requirements(requirements),
        rank=None if rank is None else parse_rank(rank),
        **fields,
    )


def placed_on(plan: Any) -> list[str]:
    return [p.host_name for p in plan.placements]
