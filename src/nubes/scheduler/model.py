"""What the scheduler reads and returns. Everything is frozen: a snapshot is shared by
concurrent requests, and a refresh makes a new one instead of changing it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np

from nubes.domain.errors import InvalidInput
from nubes.scheduler.columns import BUILTIN_NAMES, Table
from nubes.scheduler.expr import Expression

NO_HOSTS = "no compute hosts: join one with `nubes host token create` and `nubes agent join`"
#: host names listed per reason in the admin message before "… (+N more)"
ADMIN_NAMES_SHOWN = 5
GROUP_POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")
WEIGHERS = ("pack", "spread", "load")


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class HostView:
    """One compute host as the scheduler sees it; ratios are the effective ones (host, then
    aggregate, then the cloud's default), resolved by the caller."""

    id: str
    name: str
    state: str = "monitored"  # only "monitored" is up
    enabled: bool = True
    driver: str = "fake"  # qemu | lxc | fake
    arch: str = "x86_64"
    zone: str = ""
    aggregates: tuple[str, ...] = ()
    aggregate_metadata: Mapping[str, str] = field(default_factory=_empty)
    vcpus: int = 0
    ram_mb: int = 0
    disk_gb: int = 0
    allocated_vcpus: int = 0
    allocated_ram_mb: int = 0
    allocated_disk_gb: int = 0
    cpu_ratio: float = 1.0
    ram_ratio: float = 1.0
    disk_ratio: float = 1.0
    image_kinds: frozenset[str] = frozenset({"disk", "rootfs"})
    accelerated: bool = False
    metrics: Mapping[str, float | str] = field(default_factory=_empty)
    instances: int = 0
    max_instances: int | None = None
    generation: int = 0


@dataclass(frozen=True)
class ServerGroupView:
    id: str
    name: str
    policy: str
    member_host_ids: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.policy not in GROUP_POLICIES:
            raise InvalidInput(f"policy: {self.policy!r} is not one of {', '.join(GROUP_POLICIES)}")


@dataclass(frozen=True)
class Request:
    """One boot request, possibly for ``count`` identical instances."""

    vcpus: int
    ram_mb: int
    disk_gb: int
    image_kinds: tuple[str, ...] = ("disk",)  # what the image offers
    count: int = 1
    zone: str | None = None
    arch: str | None = None  # image property "architecture"
    hypervisor: str | None = None  # image/flavor property "hypervisor_type"
    extra_specs: Mapping[str, str] = field(default_factory=_empty)  # the flavor's
    requirements: Expression | None = None
    rank: Expression | None = None
    group: ServerGroupView | None = None

    def __post_init__(self) -> None:
        for name in ("vcpus", "ram_mb", "disk_gb"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"{name}: must not be negative")
        if self.count < 1:
            raise InvalidInput("count: must be at least 1")
        if self.requirements is not None and self.requirements.kind != "condition":
            raise InvalidInput("requirements: must be a condition")
        if self.rank is not None and self.rank.kind != "number":
            raise InvalidInput("rank: must be a number")


@dataclass(frozen=True)
class Config:
    """How to choose among the hosts that fit. Each weigher's score is normalised to [0, 1]
    over the candidates before its weight applies, so weights compare across weighers."""

    #: pack: fullest host that fits (fewer hosts busy); spread: emptiest; load: least loaded
    weigher: Literal["pack", "spread", "load"] = "spread"
    #: a user's RANK should outweigh the cloud's general strategy
    rank_weight: float = 10.0
    ram_weight: float = 1.0
    cpu_weight: float = 1.0
    disk_weight: float = 0.5
    load_weight: float = 1.0
    soft_affinity_weight: float = 5.0
    default_max_instances: int | None = None  # None: unlimited
    #: where in host-name order ties start, as a fraction: the first host by name at or after
    #: it wins (wrapping round). Each worker of a controller starts at its own share, so two
    #: workers placing at once on a fleet of equal hosts do not race for the same host
    tie_start: float = 0.0

    def __post_init__(self) -> None:
        if self.weigher not in WEIGHERS:
            raise InvalidInput(f"weigher: {self.weigher!r} is not one of {', '.join(WEIGHERS)}")
        if self.default_max_instances is not None and self.default_max_instances < 0:
            raise InvalidInput("default_max_instances: must not be negative")
        if not 0.0 <= self.tie_start < 1.0:
            raise InvalidInput("tie_start: a fraction from 0 up to (not including) 1")


@dataclass(frozen=True)
class Placement:
    host_id: str
    host_name: str
    image_kind: str
    #: the host's generation the plan was made on: commit with a compare-and-swap on it
    generation: int = 0


@dataclass(frozen=True)
class Rejection:
    reason: str  # "not enough RAM"
    count: int
    detail: str = ""  # "(need 2048 MB, largest free 1024 MB)"

    def __str__(self) -> str:
        return f"{self.count} {self.reason}" + (f" {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class NoFit:
    """Why hosts were turned down, one reason per host (the first filter it failed)."""

    total: int
    reasons: tuple[Rejection, ...]
    per_host: Mapping[str, str]  # host name -> reason
    fit: int = 0

    def user_message(self) -> str:
        """Aggregated counts only: host names are the operator's business."""
        if self.total == 0:
            return NO_HOSTS
        summary = ", ".join(str(r) for r in self.reasons)
        return f"{self.fit} of {self.total} hosts fit" + (f": {summary}" if summary else "")

    def admin_message(self) -> str:
        if self.total == 0:
            return NO_HOSTS
        by_reason: dict[str, list[str]] = defaultdict(list)
        for name, reason in self.per_host.items():
            by_reason[reason].append(name)
        lists = []
        for rejection in self.reasons:
            hosts = sorted(by_reason.get(rejection.reason, ()))
            shown = ", ".join(hosts[:ADMIN_NAMES_SHOWN])
            if len(hosts) > ADMIN_NAMES_SHOWN:
                shown += f", … (+{len(hosts) - ADMIN_NAMES_SHOWN} more)"
            lists.append(f"{rejection.reason}: {shown}")
        return "; ".join([self.user_message(), *lists])


@dataclass(frozen=True)
class Plan:
    placements: tuple[Placement, ...]
    #: why the rest of the batch found no host (None when every instance was placed)
    unplaced: NoFit | None = None


class Snapshot:
    """Every host, as columns. Keep one in memory and refresh it with only the rows that
    changed since (``updated``); the old snapshot stays valid for requests still using it."""

    __slots__ = ("table",)

    def __init__(self, table: Table) -> None:
        self.table = table

    @classmethod
    def build(cls, hosts: Iterable[HostView]) -> Snapshot:
        return cls(Table.build(hosts))

    def updated(self, changed: Iterable[HostView], removed_ids: Iterable[str] = ()) -> Snapshot:
        """A new snapshot with ``changed`` hosts added or replaced and ``removed_ids`` gone."""
        table = self.table.updated(changed, removed_ids)
        return self if table is self.table else Snapshot(table)

    def __len__(self) -> int:
        return self.table.count

    def __contains__(self, host_id: object) -> bool:
        return host_id in self.table.index

    @property
    def hosts(self) -> tuple[HostView, ...]:
        """In name order."""
        return tuple(sorted((h for h in self.table.hosts if h is not None), key=lambda h: h.name))

    def attribute_names(self) -> frozenset[str]:
        """Every name an expression can read on some host now: the built-in attributes and
        the metrics hosts report (the API warns about names outside this set)."""
        table = self.table
        live = table.live
        reported = [k for k, column in table.metrics.items() if (live & ~np.isnan(column)).any()]
        texts = [
            k for k, column in table.text_metrics.items() if (live & (column.codes >= 0)).any()
        ]
        return BUILTIN_NAMES | frozenset(reported) | frozenset(texts)

    def host(self, host_id: str) -> HostView | None:
        row = self.table.index.get(host_id)
        return None if row is None else self.table.hosts[row]
