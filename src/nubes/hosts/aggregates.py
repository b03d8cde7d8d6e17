"""Host aggregates and availability zones: the records the scheduler reads.

An aggregate groups hosts and carries metadata: keys matched against flavor extra specs, and
overrides of the allocation ratios and of the instance cap. An aggregate with a zone puts its
hosts in that availability zone. A host may be in many aggregates but in one zone at most; a
host in no zoned aggregate is in ``default_availability_zone``. A host does not leave a zone
while an instance on it asked for that zone: the instance would be where it did not ask to be.

:func:`effective_settings` merges it all per host, in two queries, for the scheduler. This
module never imports the API or compute.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from sqlalchemy import Select, and_, func, select, update
from sqlalchemy.orm import Session

from nubes.config import Settings
from nubes.domain.context import RequestContext
from nubes.domain.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from nubes.hosts.service import (
    HEARTBEAT_SECONDS,
    MISSED_HEARTBEATS,
    RATIO_FIELDS,
    check_max_instances,
    check_ratio,
    find_host,
)
from nubes.identity import policy
from nubes.identity.core import IdentityCore
from nubes.store import events
from nubes.store.cas import compare_and_swap
from nubes.store.models import Aggregate, AggregateHost, Host, Instance, utcnow
from nubes.store.query import MAX_LIMIT, paginate, taken

ZONE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
ZONE_RULE = "1 to 64 characters: letters, digits and _ . -"
METADATA_KEY_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,255}$")
METADATA_VALUE_MAX = 255
METADATA_KEYS_MAX = 100
#: Aggregate metadata naming the per-host instance cap (the host column is ``max_instances``).
MAX_INSTANCES_KEY = "max_instances_per_host"
#: The settings a host inherits from its aggregates, in the order of the host's columns.
INHERITED = (*RATIO_FIELDS, "max_instances")


# validation ------------------------------------------------------------------------------------


def check_zone(value: object) -> str:
    if not isinstance(value, str) or not ZONE_RE.match(value):
        raise InvalidInput(f"availability_zone: {ZONE_RULE}, not {str(value)[:80]!r}")
    return value


def check_metadata(metadata: Mapping[str, object]) -> dict[str, str | None]:
    """Keys and values of a metadata change; None (remove the key) passes. The special keys
    must be numbers the scheduler can use: a typo is refused here, not ignored there."""
    checked: dict[str, str | None] = {}
    for key, value in metadata.items():
        field = f"metadata.{str(key)[:80]}"
        if not isinstance(key, str) or not METADATA_KEY_RE.match(key):
            raise InvalidInput(f"{field}: a key is 1 to 255 letters, digits or _ . : -")
        if key == "availability_zone":
            raise InvalidInput(f"{field}: set the zone with availability_zone (--zone)")
        if value is None:
            checked[key] = None
            continue
        if not isinstance(value, str) or len(value) > METADATA_VALUE_MAX:
            raise InvalidInput(f"{field}: a value is text of at most {METADATA_VALUE_MAX} chars")
        if key in RATIO_FIELDS:
            check_ratio(field, value)
        elif key == MAX_INSTANCES_KEY:
            check_max_instances(field, value)
        checked[key] = value
    return checked


# what the scheduler reads ----------------------------------------------------------------------


@dataclass(frozen=True)
class HostSchedulingSettings:
    """One host's scheduling inputs after merging its own overrides and its aggregates'.

    ``metadata`` holds one value per key: when aggregates disagree, the most restrictive
    number (the minimum) wins, or for text the value that sorts first. ``metadata_values``
    keeps every value, for Nova-style matching of extra specs ("any of its aggregates says
    so"). ``sources`` tells where each effective setting comes from: ``host``,
    ``aggregate NAME`` or ``default``. Mappings are shared between hosts with the same
    aggregates, hence read-only.
    """

    zone: str
    aggregates: tuple[str, ...]
    metadata: Mapping[str, str]
    metadata_values: Mapping[str, frozenset[str]]
    cpu_allocation_ratio: float
    ram_allocation_ratio: float
    disk_allocation_ratio: float
    max_instances: int | None
    sources: Mapping[str, str]


@dataclass(frozen=True)
class _AggregateFacts:
    name: str
    zone: str | None
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class _Merged:
    """What a set of aggregates says; computed once per distinct set, since hosts share them."""

    zone: str | None
    names: tuple[str, ...]
    metadata: Mapping[str, str]
    values: Mapping[str, frozenset[str]]
    #: inherited setting → (smallest value, the aggregate that sets it)
    limits: Mapping[str, tuple[float, str]]


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _most_restrictive(values: Iterable[str]) -> str:
    """The smallest number when every value is one, else the text that sorts first."""
    ordered = sorted(values)
    numbers = [_number(v) for v in ordered]
    if all(n is not None for n in numbers):
        return ordered[numbers.index(min(n for n in numbers if n is not None))]
    return ordered[0]


def _merge(aggregates: list[_AggregateFacts]) -> _Merged:
    aggregates = sorted(aggregates, key=lambda a: a.name)
    values: dict[str, set[str]] = {}
    limits: dict[str, tuple[float, str]] = {}
    for agg in aggregates:
        for key, raw in agg.metadata.items():
            text = str(raw)
            values.setdefault(key, set()).add(text)
            setting = "max_instances" if key == MAX_INSTANCES_KEY else key
            number = _number(text) if setting in INHERITED else None
            if number is not None and 0 < number < limits.get(setting, (math.inf, ""))[0]:
                limits[setting] = (number, agg.name)
    zones = sorted({a.zone for a in aggregates if a.zone})
    return _Merged(
        zone=zones[0] if zones else None,
        names=tuple(a.name for a in aggregates),
        metadata=MappingProxyType({k: _most_restrictive(v) for k, v in values.items()}),
        values=MappingProxyType({k: frozenset(v) for k, v in values.items()}),
        limits=MappingProxyType(limits),
    )


def effective_settings(
    session: Session, defaults: Settings, host_ids: Iterable[str] | None = None
) -> dict[str, HostSchedulingSettings]:
    """Host id → its effective zone, aggregates, metadata, ratios and instance cap, for every
    host (or those in ``host_ids``). Each setting is the host's own override if set, else the
    minimum its aggregates set, else the cloud default (no cap, for instances).

    The scheduler may call this on every placement, so it costs two queries whatever the
    number of hosts: the hosts' overrides, and the aggregates each with its host ids joined
    into one string by the database (far fewer rows than one per membership). Core rows, no
    ORM objects; one merge per distinct set of aggregates and one result per distinct
    (overrides, aggregates), shared by every host that has them."""
    hosts = select(
        Host.id,
        Host.cpu_allocation_ratio,
        Host.ram_allocation_ratio,
        Host.disk_allocation_ratio,
        Host.max_instances,
    )
    if host_ids is not None:
        hosts = hosts.where(Host.id.in_(list(host_ids)))
    aggregates = (
        select(
            Aggregate.id,
            Aggregate.name,
            Aggregate.availability_zone,
            Aggregate.aggregate_metadata,
            func.aggregate_strings(AggregateHost.host_id, ","),
        )
        .outerjoin(AggregateHost, AggregateHost.aggregate_id == Aggregate.id)
        .group_by(Aggregate.id)
    )
    session.flush()  # the Core reads below would not autoflush the caller's pending changes
    connection = session.connection()
    # host id → (its four overrides, then its aggregates' ids): everything that decides the
    # host's settings, hence the key of the result it shares with every host alike.
    keys: dict[str, tuple[Any, ...]] = {
        row[0]: tuple(row[1:]) for row in connection.execute(hosts).all()
    }
    facts: dict[str, _AggregateFacts] = {}
    for agg_id, name, zone, metadata, members in connection.execute(aggregates).all():
        facts[agg_id] = _AggregateFacts(name, zone, metadata or {})
        for host_id in members.split(",") if members else ():
            key = keys.get(host_id)
            if key is not None:
                keys[host_id] = (*key, agg_id)
    merged_by_set: dict[tuple[str, ...], _Merged] = {}
    resolved: dict[tuple[Any, ...], HostSchedulingSettings] = {}
    result: dict[str, HostSchedulingSettings] = {}
    for host_id, key in keys.items():
        found = resolved.get(key)
        if found is None:
            ids = tuple(sorted(set(key[4:])))
            merged = merged_by_set.get(ids)
            if merged is None:
                merged = merged_by_set[ids] = _merge([facts[a] for a in ids])
            found = resolved[key] = _resolve(key[:4], merged, defaults)
        result[host_id] = found
    return result


def _resolve(
    overrides: tuple[Any, ...], merged: _Merged, defaults: Settings
) -> HostSchedulingSettings:
    fallback: dict[str, float | None] = {
        "cpu_allocation_ratio": defaults.cpu_allocation_ratio,
        "ram_allocation_ratio": defaults.ram_allocation_ratio,
        "disk_allocation_ratio": defaults.disk_allocation_ratio,
        "max_instances": None,
    }
    chosen: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting, own in zip(INHERITED, overrides, strict=True):
        if own is not None:
            chosen[setting], sources[setting] = own, "host"
        elif setting in merged.limits:
            value, name = merged.limits[setting]
            chosen[setting], sources[setting] = value, f"aggregate {name}"
        else:
            chosen[setting], sources[setting] = fallback[setting], "default"
    cap = chosen["max_instances"]
    return HostSchedulingSettings(
        zone=merged.zone or defaults.default_availability_zone,
        aggregates=merged.names,
        metadata=merged.metadata,
        metadata_values=merged.values,
        cpu_allocation_ratio=float(chosen["cpu_allocation_ratio"]),
        ram_allocation_ratio=float(chosen["ram_allocation_ratio"]),
        disk_allocation_ratio=float(chosen["disk_allocation_ratio"]),
        max_instances=None if cap is None else int(cap),
        sources=MappingProxyType(sources),
    )


def zone_names(session: Session, defaults: Settings) -> set[str]:
    """Every zone a request may name: the zones of aggregates, and the default one."""
    zones = session.scalars(
        select(Aggregate.availability_zone)
        .where(Aggregate.availability_zone.is_not(None))
        .distinct()
    )
    return {z for z in zones if z} | {defaults.default_availability_zone}


# the zone rules, enforced on every membership or zone change -----------------------------------

#: Which hosts a change touches: a list of ids, or a subquery (all hosts of an aggregate,
#: maybe thousands: never one bound parameter per host).
HostScope = list[str] | Select[Any]
#: Host id → zone → names of the aggregates that put it there (one zone, unless refused).
ZonesByHost = dict[str, dict[str, list[str]]]


def _hosts_of(aggregate_id: str) -> Select[Any]:
    return select(AggregateHost.host_id).where(AggregateHost.aggregate_id == aggregate_id)


def _host_name(session: Session, host_id: str) -> str:
    return session.scalar(select(Host.name).where(Host.id == host_id)) or host_id


def _zones_of(session: Session, hosts: HostScope) -> ZonesByHost:
    zones: ZonesByHost = {}
    rows = session.execute(
        select(AggregateHost.host_id, Aggregate.availability_zone, Aggregate.name)
        .join(Aggregate, Aggregate.id == AggregateHost.aggregate_id)
        .where(AggregateHost.host_id.in_(hosts), Aggregate.availability_zone.is_not(None))
        .order_by(Aggregate.name)
    )
    for host_id, zone, name in rows:
        zones.setdefault(host_id, {}).setdefault(str(zone), []).append(name)
    return zones


def _lock_hosts(session: Session, hosts: HostScope) -> ZonesByHost:
    """Lock the hosts (in id order: no deadlock) and read their zones once locked, so two
    changes involving one host take turns (PostgreSQL; SQLite writers always do)."""
    session.execute(select(Host.id).where(Host.id.in_(hosts)).order_by(Host.id).with_for_update())
    return _zones_of(session, hosts)


def _touch_hosts(session: Session, hosts: HostScope) -> None:
    """Bump the hosts' generation and ``updated_at``: their scheduling inputs changed, so a
    placement that read the old ones loses its claim, and a scheduler snapshot refreshed by
    ``updated_at`` sees the change. Call after :func:`_lock_hosts`."""
    session.execute(
        update(Host)
        .where(Host.id.in_(hosts))
        .values(generation=Host.generation + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def _guard_zones(
    session: Session, hosts: HostScope, before: ZonesByHost, default_zone: str
) -> None:
    """After a membership or zone change (flushed): every host in one zone at most, and no
    host moved out of a zone that an instance on it asked for."""
    after = _zones_of(session, hosts)
    moved: dict[str, tuple[str, str]] = {}
    for host_id in sorted(set(before) | set(after)):
        zones = after.get(host_id, {})
        if len(zones) > 1:
            (z1, a1), (z2, a2) = sorted(zones.items())[:2]
            raise Conflict(
                f"host {_host_name(session, host_id)!r} would be in two availability zones: "
                f"{z1!r} (aggregate {a1[0]!r}) and {z2!r} (aggregate {a2[0]!r}); a host is in "
                "one zone at most",
                code="nubes.aggregate.zone_conflict",
            )
        old = min(before.get(host_id, {}), default=default_zone)
        new = min(zones, default=default_zone)
        if old != new:
            moved[host_id] = (old, new)
    if not moved:
        return
    pinned = session.execute(
        select(Instance.host_id, Instance.availability_zone, func.count())
        .where(
            Instance.host_id.in_(hosts),
            Instance.state != "deleted",
            Instance.availability_zone.is_not(None),
        )
        .group_by(Instance.host_id, Instance.availability_zone)
        .order_by(Instance.host_id)
    )
    for on_host, asked, count in pinned:
        if on_host in moved and moved[on_host][0] == asked:
            raise Conflict(
                f"host {_host_name(session, on_host)!r} has {count} instance(s) that asked for "
                f"zone {asked!r}; it cannot move to zone {moved[on_host][1]!r} until they are "
                "deleted",
                code="nubes.aggregate.zone_in_use",
            )


# administration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AggregateView:
    aggregate: Aggregate
    hosts: tuple[str, ...]  # names, sorted


@dataclass(frozen=True)
class Zone:
    name: str
    available: bool  # at least one host up and enabled
    hosts: tuple[str, ...] | None  # for cloud admins only


def find_aggregate(session: Session, ref: str, *, lock: bool = False) -> Aggregate:
    """By id or name. ``lock`` holds the row until commit: changes lock the aggregate first,
    then its hosts, always in that order."""
    for column in (Aggregate.id, Aggregate.name):
        stmt = select(Aggregate).where(column == ref)
        if lock:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        row = session.scalar(stmt)
        if row is not None:
            return row
    raise NotFound(f"no aggregate {ref!r}", code="nubes.aggregate.not_found")


def _host_names(session: Session, aggregate_ids: list[str]) -> dict[str, tuple[str, ...]]:
    names: dict[str, list[str]] = {a: [] for a in aggregate_ids}
    if aggregate_ids:
        rows = session.execute(
            select(AggregateHost.aggregate_id, Host.name)
            .join(Host, Host.id == AggregateHost.host_id)
            .where(AggregateHost.aggregate_id.in_(aggregate_ids))
            .order_by(Host.name)
        )
        for aggregate_id, name in rows:
            names[aggregate_id].append(name)
    return {a: tuple(n) for a, n in names.items()}


class AggregateService:
    def __init__(self, core: IdentityCore) -> None:
        self.core = core

    @property
    def default_zone(self) -> str:
        return self.core.settings.default_availability_zone

    def _view(self, session: Session, row: Aggregate) -> AggregateView:
        return AggregateView(row, _host_names(session, [row.id])[row.id])

    def create(
        self,
        ctx: RequestContext,
        *,
        name: str,
        zone: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> AggregateView:
        policy.enforce(ctx, "hosts:aggregate:create")
        if zone is not None:
            check_zone(zone)
        checked = check_metadata(metadata or {})
        if any(v is None for v in checked.values()) or len(checked) > METADATA_KEYS_MAX:
            raise InvalidInput(f"metadata: at most {METADATA_KEYS_MAX} keys, each with a value")
        with self.core.db.transaction() as session:
            if taken(session, Aggregate.name, name):
                raise AlreadyExists(
                    f"an aggregate named {name!r} exists", code="nubes.aggregate.exists"
                )
            row = Aggregate(name=name, availability_zone=zone, aggregate_metadata=dict(checked))
            session.add(row)
            session.flush()
            events.record(
                session, ctx, "aggregate.created", "aggregate", row.id, payload={"name": name}
            )
            return AggregateView(row, ())

    def list_aggregates(
        self,
        ctx: RequestContext,
        *,
        name: str | None = None,
        zone: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[AggregateView]:
        policy.enforce(ctx, "hosts:aggregate:list")
        stmt = select(Aggregate)
        if name is not None:
            stmt = stmt.where(Aggregate.name == name)
        if zone is not None:
            stmt = stmt.where(Aggregate.availability_zone == zone)
        with self.core.db.read() as session:
            rows = paginate(
                session, stmt, Aggregate, limit=limit, marker=marker, sort_column=Aggregate.name
            )
            hosts = _host_names(session, [r.id for r in rows])
            return [AggregateView(r, hosts[r.id]) for r in rows]

    def get(self, ctx: RequestContext, ref: str) -> AggregateView:
        policy.enforce(ctx, "hosts:aggregate:show")
        with self.core.db.read() as session:
            return self._view(session, find_aggregate(session, ref))

    def update(self, ctx: RequestContext, ref: str, changes: Mapping[str, Any]) -> AggregateView:
        """``name``; ``availability_zone`` (None: no zone); ``metadata`` merged into the
        existing keys, a None value removing one. Its hosts are touched (see
        :func:`_touch_hosts`), since their scheduling inputs may have changed."""
        policy.enforce(ctx, "hosts:aggregate:update")
        unknown = sorted(set(changes) - {"name", "availability_zone", "metadata"})
        if unknown:
            raise InvalidInput(f"{', '.join(unknown)}: not a field of an aggregate")
        if changes.get("availability_zone") is not None:
            check_zone(changes["availability_zone"])
        metadata = check_metadata(changes.get("metadata") or {})
        with self.core.db.transaction() as session:
            row = find_aggregate(session, ref, lock=True)
            values = self._changed_values(session, row, changes, metadata)
            if values:
                hosts = _hosts_of(row.id)
                before = _lock_hosts(session, hosts)
                compare_and_swap(session, Aggregate, row.id, row.generation, values)
                session.refresh(row)
                _guard_zones(session, hosts, before, self.default_zone)
                _touch_hosts(session, hosts)
                events.record(
                    session,
                    ctx,
                    "aggregate.updated",
                    "aggregate",
                    row.id,
                    payload={"changed": sorted(values)},
                )
            return self._view(session, row)

    def _changed_values(
        self,
        session: Session,
        row: Aggregate,
        changes: Mapping[str, Any],
        metadata: dict[str, str | None],
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        new_name = changes.get("name")
        if new_name is not None and new_name != row.name:
            if taken(session, Aggregate.name, new_name):
                raise AlreadyExists(
                    f"an aggregate named {new_name!r} exists", code="nubes.aggregate.exists"
                )
            values["name"] = new_name
        if metadata:
            merged = {**row.aggregate_metadata, **metadata}
            values["aggregate_metadata"] = {k: v for k, v in merged.items() if v is not None}
            if len(values["aggregate_metadata"]) > METADATA_KEYS_MAX:
                raise InvalidInput(f"metadata: at most {METADATA_KEYS_MAX} keys")
        zone = changes.get("availability_zone")
        if "availability_zone" in changes and zone != row.availability_zone:
            values["availability_zone"] = zone
        return values

    def delete(self, ctx: RequestContext, ref: str) -> None:
        policy.enforce(ctx, "hosts:aggregate:delete")
        with self.core.db.transaction() as session:
            row = find_aggregate(session, ref, lock=True)
            hosts = _host_names(session, [row.id])[row.id]
            if hosts:
                shown = ", ".join(hosts[:5]) + (", …" if len(hosts) > 5 else "")
                raise Conflict(
                    f"aggregate {row.name!r} still has {len(hosts)} host(s) ({shown}); remove "
                    "them first (nubes aggregate remove-host)",
                    code="nubes.aggregate.in_use",
                )
            session.delete(row)
            events.record(
                session, ctx, "aggregate.deleted", "aggregate", row.id, payload={"name": row.name}
            )

    def add_host(self, ctx: RequestContext, ref: str, host: str) -> AggregateView:
        return self._change_membership(ctx, ref, host, add=True)

    def remove_host(self, ctx: RequestContext, ref: str, host: str) -> AggregateView:
        return self._change_membership(ctx, ref, host, add=False)

    def _change_membership(
        self, ctx: RequestContext, ref: str, host: str, *, add: bool
    ) -> AggregateView:
        policy.enforce(ctx, "hosts:aggregate:update")
        with self.core.db.transaction() as session:
            row = find_aggregate(session, ref, lock=True)
            member = find_host(session, host)
            before = _lock_hosts(session, [member.id])
            link = session.get(AggregateHost, (row.id, member.id))
            if add and link is not None:
                raise AlreadyExists(
                    f"host {member.name!r} is already in aggregate {row.name!r}",
                    code="nubes.aggregate.host_exists",
                )
            if not add and link is None:
                raise NotFound(
                    f"host {member.name!r} is not in aggregate {row.name!r}",
                    code="nubes.host.not_found",
                )
            if add:
                session.add(AggregateHost(aggregate_id=row.id, host_id=member.id))
            else:
                session.delete(link)
            session.flush()
            _guard_zones(session, [member.id], before, self.default_zone)
            _touch_hosts(session, [member.id])
            events.record(
                session,
                ctx,
                "aggregate.host_added" if add else "aggregate.host_removed",
                "aggregate",
                row.id,
                payload={"host": member.name},
            )
            return self._view(session, row)

    # per-host view and zones -------------------------------------------------------------

    def host_settings(self, ctx: RequestContext, host: str) -> HostSchedulingSettings:
        policy.enforce(ctx, "hosts:host:show")
        with self.core.db.read() as session:
            row = find_host(session, host)
            return effective_settings(session, self.core.settings, [row.id])[row.id]

    def zones(
        self,
        ctx: RequestContext,
        *,
        name: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[Zone]:
        """Every zone, with whether it can take instances now (a zone of aggregates without
        hosts is listed, unavailable). Host names only for cloud admins."""
        policy.enforce(ctx, "hosts:zone:list")
        stale = utcnow() - timedelta(seconds=HEARTBEAT_SECONDS * MISSED_HEARTBEATS)
        up = and_(Host.enabled, Host.state == "monitored", Host.last_seen >= stale)
        hosts: dict[str, tuple[str, bool]] = {}
        zone_of: dict[str, str] = {}
        with self.core.db.read() as session:
            rows = session.execute(
                select(Host.id, Host.name, up, Aggregate.availability_zone)
                .outerjoin(AggregateHost, AggregateHost.host_id == Host.id)
                .outerjoin(
                    Aggregate,
                    and_(
                        Aggregate.id == AggregateHost.aggregate_id,
                        Aggregate.availability_zone.is_not(None),
                    ),
                )
            )
            for host_id, host_name, is_up, zone in rows:
                hosts[host_id] = (host_name, bool(is_up))
                if zone is not None:
                    zone_of[host_id] = min(zone, zone_of.get(host_id, zone))
            named = zone_names(session, self.core.settings) - {self.default_zone}
        members: dict[str, list[tuple[str, bool]]] = {z: [] for z in named}
        for host_id, facts in hosts.items():
            members.setdefault(zone_of.get(host_id, self.default_zone), []).append(facts)
        zones = [
            Zone(
                zone,
                any(is_up for _, is_up in members[zone]),
                tuple(sorted(n for n, _ in members[zone])) if ctx.is_cloud_admin else None,
            )
            for zone in sorted(members)
            if name is None or zone == name
        ]
        return _page(zones, limit, marker)


def _page(zones: list[Zone], limit: int | None, marker: str | None) -> list[Zone]:
    """Marker pagination of a computed, name-sorted list, as ``store.query.paginate`` does."""
    if marker is not None:
        names = [z.name for z in zones]
        if marker not in names:
            raise InvalidInput(f"marker: no item {marker!r} in this list")
        zones = zones[names.index(marker) + 1 :]
    return zones[: min(limit or MAX_LIMIT, MAX_LIMIT)]
