"""Networks: a layer-2 segment of one of four types (Neutron's provider networks).

- ``local``: on one host only (a bridge with no uplink);
- ``vxlan``: the default; its VNI comes from the configured range when not given;
- ``flat`` and ``vlan``: on a named physical network of the hosts (admins only).

Admins alone may make shared, external, flat or vlan networks, or choose a segment. The
(type, physical network, segment) triple is unique under a database constraint, so two networks
never share a VNI even when made at the same moment on two controllers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubes.config import Settings
from nubes.domain.context import RequestContext
from nubes.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from nubes.identity import policy, quotas
from nubes.network import ipam
from nubes.network.common import DHCP, Service, guarded_delete
from nubes.network.lookup import find_network, network_clause
from nubes.network.ports import destroy_port
from nubes.store import events
from nubes.store.cas import compare_and_swap
from nubes.store.models import FloatingIp, Network, Port, Subnet
from nubes.store.query import paginate

TYPES = ("local", "flat", "vxlan", "vlan")
VXLAN_OVERHEAD = 50
VLAN_RANGE = (1, 4094)
VNI_RANGE = (1, 16_777_215)
#: Racing creates that drew the same VNI retry with the next free one this many times.
VNI_ATTEMPTS = 20


@dataclass(frozen=True)
class NetworkInfo:
    network: Network
    subnets: list[str]


def max_mtu(settings: Settings, network_type: str) -> int:
    return settings.global_physnet_mtu - (VXLAN_OVERHEAD if network_type == "vxlan" else 0)


def _segment_taken(network_type: str, physical: str, segment: int | None) -> Conflict:
    where = f" on physical network {physical!r}" if physical else ""
    what = f"segmentation id {segment}" if segment is not None else "the flat segment"
    return Conflict(
        f"{what} of type {network_type}{where} is already used by another network",
        code="nubes.network.segment_in_use",
    )


def _check_segment(network_type: str, physical: str, segment: int | None) -> None:
    if network_type in ("flat", "vlan") and not physical:
        raise InvalidInput(f"physical_network: a {network_type} network needs one")
    if network_type in ("local", "vxlan") and physical:
        raise InvalidInput(f"physical_network: a {network_type} network has none")
    if network_type in ("local", "flat") and segment is not None:
        raise InvalidInput(f"segmentation_id: a {network_type} network has none")
    if network_type == "vlan":
        if segment is None:
            raise InvalidInput("segmentation_id: a vlan network needs its VLAN id (1-4094)")
        if not VLAN_RANGE[0] <= segment <= VLAN_RANGE[1]:
            raise InvalidInput(f"segmentation_id: VLAN ids are 1-4094, not {segment}")
    if (
        network_type == "vxlan"
        and segment is not None
        and not VNI_RANGE[0] <= segment <= VNI_RANGE[1]
    ):
        raise InvalidInput(f"segmentation_id: VNIs are 1-16777215, not {segment}")


def free_vni(session: Session, settings: Settings) -> int:
    """The lowest VNI of the configured range no network uses."""
    low, high = settings.vxlan_vni_min, settings.vxlan_vni_max
    used = session.scalars(
        select(Network.segmentation_id)
        .where(
            Network.network_type == "vxlan",
            Network.segmentation_id >= low,
            Network.segmentation_id <= high,
        )
        .order_by(Network.segmentation_id)
    )
    expected = low
    for vni in used:
        if vni is None or vni < expected:
            continue
        if vni > expected:
            break
        expected = vni + 1
    if expected > high:
        raise Conflict(
            f"every VNI of the range {low}-{high} is in use (vxlan_vni_min/vxlan_vni_max)",
            code="nubes.network.segments_exhausted",
        )
    return expected


def insert_network(session: Session, settings: Settings, values: dict[str, Any]) -> Network:
    """The network row; a vxlan network without a segment gets the lowest free VNI, retried
    when a concurrent create took the same one (the unique constraint decides)."""
    allocate = values["network_type"] == "vxlan" and values.get("segmentation_id") is None
    for _ in range(VNI_ATTEMPTS if allocate else 1):
        if allocate:
            values["segmentation_id"] = free_vni(session, settings)
        elif values["network_type"] == "flat" and session.scalar(
            select(Network.id).where(
                Network.network_type == "flat",
                Network.physical_network == values["physical_network"],
            )
        ):
            raise _segment_taken("flat", values["physical_network"], None)
        row = Network(**values)
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            if not allocate:
                raise _segment_taken(
                    values["network_type"], values["physical_network"], values["segmentation_id"]
                ) from None
            continue
        return row
    raise Conflict(
        "other networks took every VNI this create tried; try again",
        code="nubes.network.segment_in_use",
    )


class NetworkService(Service):
    def create(
        self,
        ctx: RequestContext,
        name: str,
        *,
        network_type: str = "vxlan",
        shared: bool = False,
        router_external: bool = False,
        segmentation_id: int | None = None,
        physical_network: str | None = None,
        mtu: int | None = None,
        description: str = "",
        admin_state_up: bool = True,
    ) -> NetworkInfo:
        policy.enforce(ctx, "network:network:create", project_id=ctx.project_id)
        provider = [
            label
            for label, given in (
                ("shared", shared),
                ("router_external", router_external),
                (f"network_type {network_type}", network_type in ("flat", "vlan")),
                ("segmentation_id", segmentation_id is not None),
                ("physical_network", bool(physical_network)),
            )
            if given
        ]
        if provider and not policy.allowed(ctx, "network:network:provider"):
            raise Forbidden(f"{', '.join(provider)}: only a cloud admin may set these")
        if network_type not in TYPES:
            raise InvalidInput(f"network_type: {network_type!r} is not one of {', '.join(TYPES)}")
        physical = physical_network or ""
        _check_segment(network_type, physical, segmentation_id)
        limit = max_mtu(self.settings, network_type)
        if mtu is not None and not 68 <= mtu <= limit:
            raise InvalidInput(
                f"mtu: {mtu} is outside 68-{limit} for a {network_type} network (the physical "
                f"MTU is {self.settings.global_physnet_mtu})"
            )
        assert ctx.project_id is not None
        with self.core.db.transaction() as session:
            quotas.charge(session, ctx.project_id, {"networks": 1}, self.settings.default_quotas)
            row = insert_network(
                session,
                self.settings,
                {
                    "name": name,
                    "project_id": ctx.project_id,
                    "description": description,
                    "shared": shared,
                    "router_external": router_external,
                    "network_type": network_type,
                    "physical_network": physical,
                    "segmentation_id": segmentation_id,
                    "mtu": mtu or limit,
                    "admin_state_up": admin_state_up,
                },
            )
            events.record(
                session,
                ctx,
                "network.created",
                "network",
                row.id,
                project_id=row.project_id,
                payload={"name": name, "type": network_type, "segment": row.segmentation_id},
            )
            return NetworkInfo(row, [])

    def _infos(self, session: Session, rows: list[Network]) -> list[NetworkInfo]:
        subnets: dict[str, list[str]] = {r.id: [] for r in rows}
        if rows:
            for network_id, subnet_id in session.execute(
                select(Subnet.network_id, Subnet.id)
                .where(Subnet.network_id.in_(list(subnets)))
                .order_by(Subnet.created_at, Subnet.id)
            ):
                subnets[network_id].append(subnet_id)
        return [NetworkInfo(r, subnets[r.id]) for r in rows]

    def list_networks(
        self,
        ctx: RequestContext,
        *,
        name: str | None = None,
        shared: bool | None = None,
        router_external: bool | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[NetworkInfo]:
        policy.enforce(ctx, "network:network:list", project_id=ctx.project_id)
        stmt = select(Network).where(network_clause(ctx))
        for column, value in (
            (Network.name, name),
            (Network.shared, shared),
            (Network.router_external, router_external),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        with self.core.db.read() as session:
            rows = paginate(
                session, stmt, Network, limit=limit, marker=marker, sort_column=Network.created_at
            )
            return self._infos(session, rows)

    def get(self, ctx: RequestContext, ref: str) -> NetworkInfo:
        with self.core.db.read() as session:
            row = find_network(session, ctx, ref)
            policy.enforce(ctx, "network:network:show", project_id=row.project_id)
            return self._infos(session, [row])[0]

    def update(self, ctx: RequestContext, ref: str, changes: dict[str, Any]) -> NetworkInfo:
        """name, description, admin_state_up; shared and router_external (cloud admins)."""
        with self.core.db.transaction() as session:
            row = find_network(session, ctx, ref)
            policy.enforce(ctx, "network:network:update", project_id=row.project_id)
            provider = sorted({"shared", "router_external"} & set(changes))
            if provider and not policy.allowed(ctx, "network:network:provider"):
                raise Forbidden(f"{', '.join(provider)}: only a cloud admin may change these")
            if changes.get("shared") is False and row.shared:
                self._refuse_unshare(session, row)
            if changes.get("router_external") is False and row.router_external:
                self._refuse_internal(session, row)
            compare_and_swap(session, Network, row.id, row.generation, changes)
            session.refresh(row)
            events.record(
                session,
                ctx,
                "network.updated",
                "network",
                row.id,
                project_id=row.project_id,
                payload={"changed": sorted(changes)},
            )
            return self._infos(session, [row])[0]

    def _refuse_unshare(self, session: Session, row: Network) -> None:
        others = session.scalar(
            select(func.count())
            .select_from(Port)
            .where(Port.network_id == row.id, Port.project_id != row.project_id)
        )
        if others:
            raise Conflict(
                f"network {row.name!r} has {others} port(s) of other projects; it stays shared "
                "until they are gone",
                code="nubes.network.in_use",
            )

    def _refuse_internal(self, session: Session, row: Network) -> None:
        users = session.scalar(
            select(func.count())
            .select_from(FloatingIp)
            .where(FloatingIp.floating_network_id == row.id)
        ) or session.scalar(
            select(func.count())
            .select_from(Port)
            .where(Port.network_id == row.id, Port.device_owner == "network:router_gateway")
        )
        if users:
            raise Conflict(
                f"network {row.name!r} carries router gateways or floating IPs; it stays "
                "external until they are gone",
                code="nubes.network.in_use",
            )

    def delete(self, ctx: RequestContext, ref: str) -> None:
        """Refused while ports other than nubes' DHCP ports remain; its subnets go with it."""
        with self.core.db.transaction() as session:
            row = find_network(session, ctx, ref)
            policy.enforce(ctx, "network:network:delete", project_id=row.project_id)
            # Locked first: a port made on it meanwhile then waits, and finds it gone.
            session.execute(select(Network.id).where(Network.id == row.id).with_for_update())
            ports = list(session.scalars(select(Port).where(Port.network_id == row.id)))
            busy = [p for p in ports if p.device_owner != DHCP]
            if busy:
                example = busy[0]
                owner = f" of {example.device_owner}" if example.device_owner else ""
                raise Conflict(
                    f"network {row.name!r} has {len(busy)} port(s) in use, such as "
                    f"{example.id}{owner}; delete them first",
                    code="nubes.network.in_use",
                )
            for port in ports:
                destroy_port(session, ctx, self.settings, port)
            self._drop_subnets(session, ctx, row)
            quotas.release(session, row.project_id, {"networks": 1})
            gone = guarded_delete(
                session,
                delete(Network).where(Network.id == row.id),
                Conflict(
                    f"network {row.name!r} was just given a port; delete it first",
                    code="nubes.network.in_use",
                ),
            )
            if gone != 1:
                raise NotFound(f"no network {ref!r}", code="nubes.network.not_found")
            events.record(
                session,
                ctx,
                "network.deleted",
                "network",
                row.id,
                project_id=row.project_id,
                payload={"name": row.name},
            )

    def _drop_subnets(self, session: Session, ctx: RequestContext, row: Network) -> None:
        subnets = list(session.scalars(select(Subnet).where(Subnet.network_id == row.id)))
        ipam.forget_cooling(session, [s.id for s in subnets])
        for subnet in subnets:
            quotas.release(session, subnet.project_id, {"subnets": 1})
            events.record(
                session,
                ctx,
                "subnet.deleted",
                "subnet",
                subnet.id,
                project_id=subnet.project_id,
                payload={"network_id": row.id},
            )
        guarded_delete(
            session,
            delete(Subnet).where(Subnet.network_id == row.id),
            Conflict(
                f"network {row.name!r} was just given a port; delete it first",
                code="nubes.network.in_use",
            ),
        )
