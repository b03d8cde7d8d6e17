"""What one host's networking must look like (:class:`nubes.domain.netdesired.HostNetworks`),
computed from the records in a fixed number of queries whatever the number of ports: the
ports bound to the host (its instances' NICs, its DHCP ports, the ports of the routers placed on
it), their networks and subnets, their security-group rules with remote groups resolved to
member addresses, the other hosts to flood each vxlan network to, and the routers with their
interfaces, gateway and floating IPs. A host with no port and no router (instances without
NICs) costs one query, and :func:`networked` tells it, with its instances' NICs, in one query
on a plain connection.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, bindparam, exists, or_, select, update
from sqlalchemy.orm import Session

from nubes.domain import netdesired
from nubes.network import ipam
from nubes.network.common import COMPUTE, FLOATING_IP, ROUTER_GATEWAY, ROUTER_INTERFACE
from nubes.network.instance_ports import desired_subnet
from nubes.store.models import (
    FloatingIp,
    Host,
    IpAllocation,
    Network,
    Port,
    PortSecurityGroup,
    Router,
    SecurityGroupRule,
    Subnet,
)
from nubes.store.query import table_of

Addresses = dict[str, list[tuple[str, str]]]

_PORTS = table_of(Port).c
_HOST_PORT = (_PORTS.host_id == bindparam("host_id")) & (_PORTS.device_owner != FLOATING_IP)
_HOST_ROUTER = table_of(Router).c.host_id == bindparam("host_id")
_HAS_ANY = select(or_(exists().where(_HOST_PORT), exists().where(_HOST_ROUTER)))
_INSTANCE_PORT = _PORTS.device_id.in_(bindparam("instance_ids", expanding=True)) & (
    _PORTS.device_owner == COMPUTE
)
_NETWORKED = select(
    or_(
        exists().where(_HOST_PORT),
        exists().where(_HOST_ROUTER),
        exists().where(_INSTANCE_PORT),
    )
)


def networked(connection: Connection, host_id: str, instance_ids: Sequence[str]) -> bool:
    """Whether the host has any networking (a port or a router) or one of ``instance_ids``
    any NIC: when not, its :func:`host_networks` is empty and the instances have no NICs,
    and the agents' desired state needs no more of the network tables."""
    params = {"host_id": host_id, "instance_ids": list(instance_ids)}
    return bool(connection.scalar(_NETWORKED, params))


def host_networks(session: Session, host_id: str, metadata_url: str) -> netdesired.HostNetworks:
    if not session.scalar(_HAS_ANY, {"host_id": host_id}):
        return netdesired.HostNetworks(metadata_url=metadata_url)
    ports = list(
        session.scalars(
            select(Port)
            .where(Port.host_id == host_id, Port.device_owner != FLOATING_IP)
            .order_by(Port.created_at, Port.id)
        )
    )
    routers = list(
        session.scalars(select(Router).where(Router.host_id == host_id).order_by(Router.id))
    )
    addresses = ipam.addresses_of(session, [p.id for p in ports])
    network_ids = sorted({p.network_id for p in ports})
    networks = list(
        session.scalars(select(Network).where(Network.id.in_(network_ids)).order_by(Network.id))
    )
    subnets = list(
        session.scalars(
            select(Subnet)
            .where(Subnet.network_id.in_(network_ids))
            .order_by(Subnet.created_at, Subnet.id)
        )
    )
    peers = _vxlan_peers(session, host_id, [n.id for n in networks if n.network_type == "vxlan"])
    return netdesired.HostNetworks(
        networks=tuple(_network(n, subnets, peers.get(n.id, ())) for n in networks),
        ports=tuple(_ports(session, ports, addresses)),
        routers=tuple(_routers(session, routers, ports, addresses, subnets)),
        metadata_url=metadata_url,
    )


def _network(row: Network, subnets: Sequence[Subnet], peers: Sequence[str]) -> netdesired.Network:
    return netdesired.Network(
        id=row.id,
        name=row.name,
        type=row.network_type,
        mtu=row.mtu,
        segmentation_id=row.segmentation_id,
        physical_network=row.physical_network or None,
        subnets=tuple(desired_subnet(s) for s in subnets if s.network_id == row.id),
        vxlan_peers=tuple(peers),
        external=row.router_external,
    )


def _vxlan_peers(
    session: Session, host_id: str, network_ids: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    """Per vxlan network, the addresses of the other hosts with ports bound on it."""
    if not network_ids:
        return {}
    rows = session.execute(
        select(Port.network_id, Host.address)
        .distinct()
        .join(Host, Host.id == Port.host_id)
        .where(Port.network_id.in_(list(network_ids)), Port.host_id != host_id, Host.address != "")
    ).all()
    peers: dict[str, set[str]] = defaultdict(set)
    for network_id, address in rows:
        peers[network_id].add(address)
    return {k: tuple(sorted(v)) for k, v in peers.items()}


def _ports(session: Session, ports: Sequence[Port], addresses: Addresses) -> list[netdesired.Port]:
    rules = _rules_by_port(session, [p for p in ports if p.port_security_enabled])
    return [
        netdesired.Port(
            id=p.id,
            network_id=p.network_id,
            mac=p.mac_address,
            fixed_ips=tuple(addresses[p.id]),
            device_owner=p.device_owner,
            device_id=p.device_id,
            hostname=p.dns_name,
            port_security=p.port_security_enabled,
            rules=tuple(rules.get(p.id, ())),
            allowed_addresses=tuple(pair["ip_address"] for pair in p.allowed_address_pairs),
        )
        for p in ports
    ]


def _rules_by_port(session: Session, ports: Sequence[Port]) -> dict[str, list[netdesired.Rule]]:
    """The union of each port's groups' rules; three queries for every port of the host."""
    ids = [p.id for p in ports]
    if not ids:
        return {}
    membership = session.execute(
        select(PortSecurityGroup.port_id, PortSecurityGroup.security_group_id).where(
            PortSecurityGroup.port_id.in_(ids)
        )
    ).all()
    group_ids = sorted({g for _, g in membership})
    rules = list(
        session.scalars(
            select(SecurityGroupRule)
            .where(SecurityGroupRule.security_group_id.in_(group_ids))
            .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)
        )
    )
    members = _members(session, {r.remote_group_id for r in rules if r.remote_group_id})
    by_group: dict[str, list[netdesired.Rule]] = defaultdict(list)
    for rule in rules:
        by_group[rule.security_group_id].append(_rule(rule, members))
    result: dict[str, list[netdesired.Rule]] = defaultdict(list)
    for port_id, group_id in sorted(membership):
        for resolved in by_group[group_id]:
            if resolved not in result[port_id]:
                result[port_id].append(resolved)
    return result


def _members(session: Session, group_ids: Iterable[str]) -> dict[str, list[str]]:
    """Group id → the fixed and allowed addresses of its member ports, as /32 or /128."""
    ids = sorted(group_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(
            PortSecurityGroup.security_group_id,
            IpAllocation.ip_address,
            Port.allowed_address_pairs,
        )
        .join(Port, Port.id == PortSecurityGroup.port_id)
        .outerjoin(IpAllocation, IpAllocation.port_id == Port.id)
        .where(PortSecurityGroup.security_group_id.in_(ids))
    ).all()
    found: dict[str, set[str]] = defaultdict(set)
    for group_id, address, pairs in rows:
        if address:
            found[group_id].add(str(ipaddress.ip_network(address)))
        for pair in pairs or ():
            found[group_id].add(str(ipaddress.ip_network(pair["ip_address"], strict=False)))
    return {g: sorted(found[g]) for g in ids}


def _rule(row: SecurityGroupRule, members: dict[str, list[str]]) -> netdesired.Rule:
    remote: tuple[str, ...] | None = None
    if row.remote_ip_prefix is not None:
        remote = (row.remote_ip_prefix,)
    elif row.remote_group_id is not None:
        version = 4 if row.ethertype == "IPv4" else 6
        remote = tuple(
            cidr
            for cidr in members.get(row.remote_group_id, [])
            if ipaddress.ip_network(cidr).version == version
        )
    return netdesired.Rule(
        direction=row.direction,
        ethertype=row.ethertype,
        protocol=row.protocol,
        port_min=row.port_range_min,
        port_max=row.port_range_max,
        remote=remote,
    )


def _routers(
    session: Session,
    routers: Sequence[Router],
    ports: Sequence[Port],
    addresses: Addresses,
    subnets: Sequence[Subnet],
) -> list[netdesired.Router]:
    if not routers:
        return []
    by_subnet = {s.id: s for s in subnets}
    fips = list(
        session.scalars(
            select(FloatingIp)
            .where(
                FloatingIp.router_id.in_([r.id for r in routers]), FloatingIp.port_id.is_not(None)
            )
            .order_by(FloatingIp.floating_ip_address)
        )
    )
    result = []
    for router in routers:
        own = [p for p in ports if p.device_id == router.id]
        interfaces = [
            netdesired.RouterInterface(
                network_id=p.network_id,
                subnet_id=subnet_id,
                port_id=p.id,
                mac=p.mac_address,
                address=address,
                prefixlen=_prefixlen(by_subnet, subnet_id),
            )
            for p in own
            if p.device_owner == ROUTER_INTERFACE
            for subnet_id, address in addresses[p.id]
        ]
        gateway = next((p for p in own if p.device_owner == ROUTER_GATEWAY), None)
        result.append(_router(router, gateway, addresses, by_subnet, interfaces, fips))
    return result


def _prefixlen(subnets: dict[str, Subnet], subnet_id: str) -> int:
    return ipaddress.ip_network(subnets[subnet_id].cidr).prefixlen


def _router(
    router: Router,
    gateway: Port | None,
    addresses: Addresses,
    subnets: dict[str, Subnet],
    interfaces: list[netdesired.RouterInterface],
    fips: Sequence[FloatingIp],
) -> netdesired.Router:
    floating = tuple(
        netdesired.FloatingIp(
            id=f.id,
            address=f.floating_ip_address,
            fixed_address=f.fixed_ip_address or "",
            port_id=f.port_id or "",
        )
        for f in fips
        if f.router_id == router.id
    )
    base = netdesired.Router(
        id=router.id,
        name=router.name,
        snat=router.enable_snat,
        interfaces=tuple(interfaces),
        floating_ips=floating,
    )
    if gateway is None or not addresses[gateway.id]:
        return base
    subnet_id, address = addresses[gateway.id][0]
    subnet = subnets[subnet_id]
    return netdesired.Router(
        id=router.id,
        name=router.name,
        external_network_id=gateway.network_id,
        gateway_port_id=gateway.id,
        gateway_mac=gateway.mac_address,
        gateway_address=address,
        gateway_prefixlen=_prefixlen(subnets, subnet_id),
        external_gateway_ip=subnet.gateway_ip,
        snat=router.enable_snat,
        interfaces=tuple(interfaces),
        floating_ips=floating,
    )


def report_ports(session: Session, host_id: str, wired: Iterable[str]) -> int:
    """The agent's word on which of the host's ports it has wired: those go ACTIVE, the other
    ports bound to the host DOWN. Returns how many changed."""
    done = set(wired)
    changed = 0
    for status, condition in (
        ("ACTIVE", Port.id.in_(done)),
        ("DOWN", Port.id.not_in(done)),
    ):
        result = session.execute(
            update(Port)
            .where(Port.host_id == host_id, condition, Port.status != status)
            .values(status=status)
            .execution_options(synchronize_session=False)
        )
        changed += int(result.rowcount)  # type: ignore[attr-defined]
    return changed
