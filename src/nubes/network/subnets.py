"""Subnets: address ranges on a network, checked whole before anything is written (see
:mod:`nubes.network.addresses`) and against the network's other subnets (no overlap; the
network row is locked while checking, so two racing creates cannot both pass).

IPv4 and IPv6 are both accepted; IPv6 addresses are handed out statically from the pools like
IPv4 ones (no SLAAC or router advertisements), and need a network MTU of at least 1280.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from nubes.config import Settings
from nubes.domain.context import RequestContext
from nubes.domain.errors import Conflict, InvalidInput, NotFound
from nubes.identity import policy, quotas
from nubes.network import ipam
from nubes.network.addresses import (
    DEFAULT,
    Default,
    SubnetPlan,
    check_dns,
    check_routes,
    parse_cidr,
    plan_subnet,
)
from nubes.network.common import DHCP, ROUTER_INTERFACE, Service, guarded_delete
from nubes.network.dhcp import lock_network, sync_dhcp
from nubes.network.lookup import find_network, find_subnet, subnet_clause
from nubes.network.ports import destroy_port
from nubes.store import events
from nubes.store.cas import compare_and_swap
from nubes.store.models import IpAllocation, Network, Port, Subnet
from nubes.store.query import paginate


def check_no_overlap(session: Session, network: Network, cidr: str) -> None:
    new = ipaddress.ip_network(cidr)
    for other in session.scalars(select(Subnet).where(Subnet.network_id == network.id)):
        if new.overlaps(ipaddress.ip_network(other.cidr)):  # type: ignore[arg-type]
            raise Conflict(
                f"cidr {new} overlaps {other.cidr} of subnet {other.name or other.id} "
                f"({other.id}) on network {network.name!r}",
                code="nubes.subnet.overlap",
            )


def insert_subnet(
    session: Session,
    ctx: RequestContext,
    settings: Settings,
    network: Network,
    plan: SubnetPlan,
    *,
    name: str,
    description: str = "",
    enable_dhcp: bool = True,
) -> Subnet:
    """Charge, check and write a planned subnet in the caller's transaction."""
    if plan.version == 6 and network.mtu < 1280:
        raise InvalidInput(
            f"cidr: IPv6 needs an MTU of at least 1280; network {network.name!r} has {network.mtu}",
            code="nubes.subnet.invalid",
        )
    quotas.charge(session, network.project_id, {"subnets": 1}, settings.default_quotas)
    lock_network(session, network.id)
    check_no_overlap(session, network, str(plan.cidr))
    row = Subnet(
        name=name,
        project_id=network.project_id,
        network_id=network.id,
        description=description,
        ip_version=plan.version,
        cidr=str(plan.cidr),
        gateway_ip=str(plan.gateway) if plan.gateway is not None else None,
        allocation_pools=[pool.render() for pool in plan.pools],
        dns_nameservers=list(plan.dns_nameservers),
        host_routes=[list(route) for route in plan.host_routes],
        enable_dhcp=enable_dhcp,
    )
    session.add(row)
    session.flush()
    events.record(
        session,
        ctx,
        "subnet.created",
        "subnet",
        row.id,
        project_id=row.project_id,
        payload={"network_id": network.id, "cidr": row.cidr},
    )
    return row


class SubnetService(Service):
    def create(
        self,
        ctx: RequestContext,
        name: str,
        *,
        network: str,
        cidr: str,
        gateway_ip: str | Default | None = DEFAULT,
        allocation_pools: list[tuple[str, str]] | None = None,
        dns_nameservers: list[str] | None = None,
        host_routes: list[tuple[str, str]] | None = None,
        enable_dhcp: bool = True,
        ip_version: int | None = None,
        description: str = "",
    ) -> Subnet:
        """``gateway_ip``: DEFAULT gives the first address, None no gateway."""
        plan = plan_subnet(
            cidr,
            gateway=gateway_ip,
            pools=allocation_pools,
            dns_nameservers=dns_nameservers or (),
            host_routes=host_routes or (),
            ip_version=ip_version,
        )
        with self.core.db.transaction() as session:
            net = find_network(session, ctx, network)
            policy.enforce(ctx, "network:subnet:create", project_id=net.project_id)
            row = insert_subnet(
                session,
                ctx,
                self.settings,
                net,
                plan,
                name=name,
                description=description,
                enable_dhcp=enable_dhcp,
            )
            sync_dhcp(session, ctx, self.settings, net.id)
            return row

    def list_subnets(
        self,
        ctx: RequestContext,
        *,
        name: str | None = None,
        network: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[Subnet]:
        policy.enforce(ctx, "network:subnet:list", project_id=ctx.project_id)
        stmt = select(Subnet).where(subnet_clause(ctx))
        if name is not None:
            stmt = stmt.where(Subnet.name == name)
        with self.core.db.read() as session:
            if network is not None:
                stmt = stmt.where(Subnet.network_id == find_network(session, ctx, network).id)
            return paginate(
                session, stmt, Subnet, limit=limit, marker=marker, sort_column=Subnet.created_at
            )

    def get(self, ctx: RequestContext, ref: str) -> Subnet:
        with self.core.db.read() as session:
            row = find_subnet(session, ctx, ref)
            policy.enforce(ctx, "network:subnet:show", project_id=row.project_id)
            return row

    def update(self, ctx: RequestContext, ref: str, changes: dict[str, Any]) -> Subnet:
        """name, description, dns_nameservers, host_routes, enable_dhcp."""
        with self.core.db.transaction() as session:
            row = find_subnet(session, ctx, ref)
            policy.enforce(ctx, "network:subnet:update", project_id=row.project_id)
            values = dict(changes)
            cidr = parse_cidr(row.cidr)
            if "dns_nameservers" in values:
                values["dns_nameservers"] = list(check_dns(cidr.version, values["dns_nameservers"]))
            if "host_routes" in values:
                values["host_routes"] = [list(r) for r in check_routes(cidr, values["host_routes"])]
            compare_and_swap(session, Subnet, row.id, row.generation, values)
            session.refresh(row)
            if "enable_dhcp" in values:
                sync_dhcp(session, ctx, self.settings, row.network_id)
            events.record(
                session,
                ctx,
                "subnet.updated",
                "subnet",
                row.id,
                project_id=row.project_id,
                payload={"changed": sorted(changes)},
            )
            return row

    def delete(self, ctx: RequestContext, ref: str) -> None:
        with self.core.db.transaction() as session:
            row = find_subnet(session, ctx, ref)
            policy.enforce(ctx, "network:subnet:delete", project_id=row.project_id)
            lock_network(session, row.network_id)
            users = session.execute(
                select(Port.device_owner, func.count())
                .join(IpAllocation, IpAllocation.port_id == Port.id)
                .where(IpAllocation.subnet_id == row.id, Port.device_owner != DHCP)
                .group_by(Port.device_owner)
            ).all()
            if users:
                total = sum(int(n) for _, n in users)
                router = (
                    " (one is a router interface: router remove-subnet)"
                    if any(owner == ROUTER_INTERFACE for owner, _ in users)
                    else ""
                )
                raise Conflict(
                    f"subnet {row.name or row.id} has {total} port(s) with addresses on it"
                    f"{router}; delete them first",
                    code="nubes.subnet.in_use",
                )
            self._drop_dhcp_addresses(session, ctx, row)
            ipam.forget_cooling(session, [row.id])
            quotas.release(session, row.project_id, {"subnets": 1})
            gone = guarded_delete(
                session,
                delete(Subnet).where(Subnet.id == row.id),
                Conflict(
                    f"subnet {row.name or row.id} just gave a port an address; delete it first",
                    code="nubes.subnet.in_use",
                ),
            )
            if gone != 1:
                raise NotFound(f"no subnet {ref!r}", code="nubes.subnet.not_found")
            events.record(
                session,
                ctx,
                "subnet.deleted",
                "subnet",
                row.id,
                project_id=row.project_id,
                payload={"network_id": row.network_id},
            )

    def _drop_dhcp_addresses(self, session: Session, ctx: RequestContext, row: Subnet) -> None:
        """DHCP ports give up their address on the subnet; one left without any goes."""
        dhcp_ports = list(
            session.scalars(
                select(Port).where(Port.network_id == row.network_id, Port.device_owner == DHCP)
            )
        )
        for port in dhcp_ports:
            ipam.release_on_subnet(session, port.id, row.id, 0)
            if not ipam.addresses_of(session, [port.id])[port.id]:
                destroy_port(session, ctx, self.settings, port)
