"""DHCP ports: each host serves DHCP for its own instances, so a host with compute ports on a
network with a DHCP-enabled subnet gets one port there (device_owner ``network:dhcp``,
device_id the host), with an address on every DHCP-enabled subnet.

:func:`sync_dhcp` makes this true for a network (or some of its hosts) and is called whenever it
may have stopped being true: a port bound or released, a subnet added, changed or removed. The
network row is locked first, so two transactions never both make a host's DHCP port.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubes.config import Settings
from nubes.domain.context import RequestContext
from nubes.network import ipam
from nubes.network.common import COMPUTE, DHCP
from nubes.network.ports import FixedIp, assign_fixed_ips, destroy_port, make_port
from nubes.store.models import IpAllocation, Network, Port, Subnet


def lock_network(session: Session, network_id: str) -> Network | None:
    """The network row, locked until commit (PostgreSQL; SQLite writers are serial anyway)."""
    return session.scalar(select(Network).where(Network.id == network_id).with_for_update())


def sync_dhcp(
    session: Session,
    ctx: RequestContext,
    settings: Settings,
    network_id: str,
    hosts: Iterable[str] | None = None,
) -> None:
    """DHCP ports of ``network_id`` as the module docstring says, for ``hosts`` (default: every
    host that has or had one)."""
    network = lock_network(session, network_id)
    if network is None:
        return
    dhcp_subnets = list(
        session.scalars(
            select(Subnet)
            .where(Subnet.network_id == network_id, Subnet.enable_dhcp)
            .order_by(Subnet.created_at, Subnet.id)
        )
    )
    existing = {
        p.device_id: p
        for p in session.scalars(
            select(Port).where(Port.network_id == network_id, Port.device_owner == DHCP)
        )
    }
    serving = {
        host_id
        for host_id in session.scalars(
            select(Port.host_id)
            .distinct()
            .where(Port.network_id == network_id, Port.device_owner == COMPUTE)
        )
        if host_id is not None
    }
    considered = set(hosts) if hosts is not None else serving | set(existing)
    for host_id in sorted(considered):
        port = existing.get(host_id)
        if host_id in serving and dhcp_subnets:
            if port is None:
                _make_dhcp_port(session, ctx, settings, network, host_id, dhcp_subnets)
            else:
                _fit_addresses(session, settings, network, port, dhcp_subnets)
        elif port is not None:
            destroy_port(session, ctx, settings, port)


def _make_dhcp_port(
    session: Session,
    ctx: RequestContext,
    settings: Settings,
    network: Network,
    host_id: str,
    subnets: list[Subnet],
) -> None:
    make_port(
        session,
        ctx,
        settings,
        network,
        network.project_id,
        name=f"dhcp-{host_id}",
        fixed_ips=[FixedIp(subnet=s.id) for s in subnets],
        port_security_enabled=False,
        device_owner=DHCP,
        device_id=host_id,
        host_id=host_id,
    )


def _fit_addresses(
    session: Session, settings: Settings, network: Network, port: Port, subnets: list[Subnet]
) -> None:
    """An address on each DHCP subnet, none on the others."""
    held = set(
        session.scalars(select(IpAllocation.subnet_id).where(IpAllocation.port_id == port.id))
    )
    wanted = {s.id for s in subnets}
    for subnet_id in held - wanted:
        ipam.release_on_subnet(session, port.id, subnet_id, settings.ip_cooldown_seconds)
    missing = [FixedIp(subnet=s.id) for s in subnets if s.id not in held]
    if missing:
        assign_fixed_ips(session, network, port, missing)
