"""Ports: a MAC and fixed IPs on a network, with security groups. :func:`make_port` and
:func:`destroy_port` are the one way any port is made or removed — by users, for instances,
DHCP, routers and floating IPs — so IPAM, security groups and quotas are handled alike.

Quota: ports a user or an instance asked for count against ``ports``; ports nubes makes for
itself (``device_owner`` ``network:*``: DHCP, router interfaces and gateways, floating IPs) do
not, as in Neutron for the latter two. Users may not give a ``network:*`` owner.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubes.config import Settings
from nubes.domain.context import RequestContext
from nubes.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from nubes.identity import policy, quotas
from nubes.network import ipam
from nubes.network.common import COMPUTE, RESERVED_PREFIX, Service
from nubes.network.lookup import find_network, find_port, own_clause, subnet_on_network
from nubes.network.security_groups import DEFAULT_GROUP, resolve_groups
from nubes.store import events
from nubes.store.cas import compare_and_swap
from nubes.store.models import FloatingIp, Network, Port, PortSecurityGroup, Subnet
from nubes.store.query import delete_row, paginate

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
MAC_ATTEMPTS = 16
_rng = random.Random()


@dataclass(frozen=True)
class FixedIp:
    """A fixed IP asked for: a subnet (id or name), an address, or both."""

    subnet: str | None = None
    ip_address: str | None = None


@dataclass(frozen=True)
class PortInfo:
    port: Port
    fixed_ips: list[tuple[str, str]]
    security_groups: list[str]


def random_mac() -> str:
    """OpenStack's prefix fa:16:3e: locally administered, unicast."""
    return "fa:16:3e:" + ":".join(f"{_rng.randrange(256):02x}" for _ in range(3))


def check_mac(value: str) -> str:
    mac = value.strip().lower().replace("-", ":")
    if not MAC_RE.match(mac):
        raise InvalidInput(f"mac_address: {value!r} is not a MAC address such as fa:16:3e:00:00:01")
    if int(mac[:2], 16) & 1:
        raise InvalidInput(f"mac_address: {value} is a multicast address")
    if mac == "00:00:00:00:00:00":
        raise InvalidInput("mac_address: 00:00:00:00:00:00 is not a usable address")
    return mac


def check_pairs(pairs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    result: list[dict[str, str]] = []
    for pair in pairs:
        text = str(pair.get("ip_address", "")).strip()
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidInput(
                f"allowed_address_pairs: {text!r} is not an IP address or CIDR"
            ) from None
        item = {"ip_address": str(network) if "/" in text else str(network.network_address)}
        if pair.get("mac_address"):
            item["mac_address"] = check_mac(str(pair["mac_address"]))
        result.append(item)
    return result


def _insert_port(session: Session, values: dict[str, Any], mac: str | None) -> Port:
    """The port row with the given MAC, or a random one; (network, mac) is unique, so a
    generated MAC that collides is drawn again."""
    for _ in range(MAC_ATTEMPTS):
        port = Port(**values, mac_address=mac or random_mac())
        try:
            with session.begin_nested():
                session.add(port)
                session.flush()
        except IntegrityError:
            taken = _mac_taken(session, values["network_id"], port.mac_address)
            if mac or taken is None:
                raise taken or Conflict(
                    "the network was deleted while the port was made", code="nubes.port.in_use"
                ) from None
            continue
        return port
    raise Conflict("could not draw a free MAC address; try again", code="nubes.port.mac_in_use")


def _mac_taken(session: Session, network_id: str, mac: str) -> Conflict | None:
    owner = session.scalar(
        select(Port.id).where(Port.network_id == network_id, Port.mac_address == mac)
    )
    if owner is None:
        return None
    return Conflict(
        f"mac_address {mac} is in use on this network by port {owner}",
        code="nubes.port.mac_in_use",
    )


def network_subnets(session: Session, network_id: str) -> list[Subnet]:
    return list(
        session.scalars(
            select(Subnet)
            .where(Subnet.network_id == network_id)
            .order_by(Subnet.created_at, Subnet.id)
        )
    )


def _subnet_for_address(session: Session, network: Network, address: str) -> Subnet:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        raise InvalidInput(
            f"ip_address: {address!r} is not an IP address", code="nubes.subnet.address_invalid"
        ) from None
    for subnet in network_subnets(session, network.id):
        if ip in ipaddress.ip_network(subnet.cidr):
            return subnet
    raise InvalidInput(
        f"{ip} is in no subnet of network {network.name!r}", code="nubes.subnet.address_invalid"
    )


def assign_fixed_ips(
    session: Session,
    network: Network,
    port: Port,
    requests: Sequence[FixedIp] | None,
    *,
    for_gateway: bool = False,
) -> list[tuple[str, str]]:
    """Addresses for a flushed port: as requested, or (``None``) one from the network's first
    subnet. A network without subnets gives none."""
    if requests is None:
        first = session.scalar(
            select(Subnet)
            .where(Subnet.network_id == network.id)
            .order_by(Subnet.created_at, Subnet.id)
            .limit(1)
        )
        if first is None:
            return []
        return [(first.id, ipam.allocate(session, first, port.id, for_gateway=for_gateway))]
    given: list[tuple[str, str]] = []
    for request in requests:
        if request.subnet is not None:
            subnet = subnet_on_network(session, network, request.subnet)
        elif request.ip_address is not None:
            subnet = _subnet_for_address(session, network, request.ip_address)
        else:
            raise InvalidInput("fixed_ips: each entry needs a subnet_id, an ip_address or both")
        address = ipam.allocate(
            session, subnet, port.id, address=request.ip_address, for_gateway=for_gateway
        )
        given.append((subnet.id, address))
    return given


def make_port(
    session: Session,
    ctx: RequestContext,
    settings: Settings,
    network: Network,
    project_id: str,
    *,
    name: str = "",
    description: str = "",
    fixed_ips: Sequence[FixedIp] | None = None,
    mac_address: str | None = None,
    security_groups: Sequence[str] | None = None,
    port_security_enabled: bool = True,
    allowed_address_pairs: Sequence[Mapping[str, Any]] = (),
    device_owner: str = "",
    device_id: str = "",
    host_id: str | None = None,
    dns_name: str = "",
    auto_delete: bool = False,
    device_index: int | None = None,
) -> PortInfo:
    """A port row with its addresses and groups, in the caller's transaction. Quota is the
    caller's business (see the module docstring)."""
    pairs = check_pairs(allowed_address_pairs)
    _check_security(port_security_enabled, security_groups, pairs)
    values = {
        "name": name,
        "description": description,
        "project_id": project_id,
        "network_id": network.id,
        "port_security_enabled": port_security_enabled,
        "allowed_address_pairs": pairs,
        "device_owner": device_owner,
        "device_id": device_id,
        "host_id": host_id,
        "dns_name": dns_name,
        "auto_delete": auto_delete,
        "device_index": device_index,
    }
    mac = check_mac(mac_address) if mac_address else None
    port = _insert_port(session, values, mac)
    addresses = assign_fixed_ips(
        session, network, port, fixed_ips, for_gateway=device_owner == "network:router_interface"
    )
    groups: list[str] = []
    if port_security_enabled:
        refs = list(security_groups) if security_groups is not None else [DEFAULT_GROUP]
        groups = set_groups(session, ctx, settings, port, refs, fresh=True)
    events.record(
        session,
        ctx,
        "port.created",
        "port",
        port.id,
        project_id=project_id,
        payload={"network_id": network.id, "device_owner": device_owner},
    )
    return PortInfo(port, addresses, sorted(groups))


def _check_security(
    enabled: bool, groups: Sequence[str] | None, pairs: Sequence[Mapping[str, Any]]
) -> None:
    if enabled:
        return
    if groups:
        raise InvalidInput(
            "port_security_enabled: false needs security_groups to be empty (a port without "
            "port security is not filtered)"
        )
    if pairs:
        raise InvalidInput(
            "allowed_address_pairs: only a port with port security has address pairs"
        )


def set_groups(
    session: Session,
    ctx: RequestContext,
    settings: Settings,
    port: Port,
    refs: Sequence[str],
    *,
    fresh: bool = False,
) -> list[str]:
    """Replace the port's groups (``fresh``: a new port, which has none yet)."""
    ids = resolve_groups(session, ctx, refs, port.project_id, settings.default_quotas)
    if not fresh:
        session.execute(delete(PortSecurityGroup).where(PortSecurityGroup.port_id == port.id))
    for group_id in ids:
        session.add(PortSecurityGroup(port_id=port.id, security_group_id=group_id))
    session.flush()
    return ids


def charged(port: Port) -> bool:
    return not port.device_owner.startswith(RESERVED_PREFIX)


def destroy_port(session: Session, ctx: RequestContext, settings: Settings, port: Port) -> None:
    """Remove a port: its floating IPs are disassociated, its addresses go into cool-down, and
    its quota is given back. Raises NotFound when a concurrent transaction removed it first."""
    if charged(port):
        quotas.release(session, port.project_id, {"ports": 1})
    session.execute(
        update(FloatingIp)
        .where(FloatingIp.port_id == port.id)
        .values(port_id=None, fixed_ip_address=None, router_id=None, status="DOWN")
        .execution_options(synchronize_session=False)
    )
    ipam.release_port(session, port.id, settings.ip_cooldown_seconds)
    if not delete_row(session, Port, port.id):
        raise NotFound(f"no port {port.id!r}", code="nubes.port.not_found")
    events.record(
        session,
        ctx,
        "port.deleted",
        "port",
        port.id,
        project_id=port.project_id,
        payload={"network_id": port.network_id, "device_owner": port.device_owner},
    )


def port_infos(session: Session, ports: Sequence[Port]) -> list[PortInfo]:
    """The ports with their addresses and groups: two queries for any number of ports."""
    ids = [p.id for p in ports]
    addresses = ipam.addresses_of(session, ids)
    groups: dict[str, list[str]] = {pid: [] for pid in ids}
    if ids:
        for port_id, group_id in session.execute(
            select(PortSecurityGroup.port_id, PortSecurityGroup.security_group_id)
            .where(PortSecurityGroup.port_id.in_(ids))
            .order_by(PortSecurityGroup.security_group_id)
        ):
            groups[port_id].append(group_id)
    return [PortInfo(p, addresses[p.id], groups[p.id]) for p in ports]


def check_network_for_port(ctx: RequestContext, network: Network) -> None:
    """Visible is not enough to plug into: the network must be the caller's or shared."""
    if ctx.is_cloud_admin or network.project_id == ctx.project_id or network.shared:
        return
    raise Forbidden(
        f"network {network.name!r} is external and not shared: ports on it are made by "
        "routers and floating IPs, or by a cloud admin"
    )


def _check_owner(device_owner: str | None) -> None:
    if device_owner and device_owner.startswith(RESERVED_PREFIX):
        raise InvalidInput(
            f"device_owner: {device_owner!r} is reserved for the ports nubes makes itself"
        )


class PortService(Service):
    def create(
        self,
        ctx: RequestContext,
        network: str,
        *,
        fixed_ips: Sequence[FixedIp] | None = None,
        security_groups: Sequence[str] | None = None,
        **fields: Any,
    ) -> PortInfo:
        """``fields``: name, description, mac_address, port_security_enabled,
        allowed_address_pairs, device_owner, device_id (see :func:`make_port`)."""
        policy.enforce(ctx, "network:port:create", project_id=ctx.project_id)
        _check_owner(fields.get("device_owner"))
        assert ctx.project_id is not None
        with self.core.db.transaction() as session:
            net = find_network(session, ctx, network)
            check_network_for_port(ctx, net)
            info = make_port(
                session,
                ctx,
                self.settings,
                net,
                ctx.project_id,
                fixed_ips=fixed_ips,
                security_groups=security_groups,
                **fields,
            )
            # Charged last: the usage row stays locked until commit, and every port create of
            # the project queues on it; taken last, it is held for one statement, not the whole
            # create. (A refused charge still rolls everything back.)
            quotas.charge(session, ctx.project_id, {"ports": 1}, self.settings.default_quotas)
            return info

    def list_ports(
        self,
        ctx: RequestContext,
        *,
        name: str | None = None,
        network: str | None = None,
        device_id: str | None = None,
        device_owner: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[PortInfo]:
        policy.enforce(ctx, "network:port:list", project_id=ctx.project_id)
        stmt = select(Port).where(own_clause(Port, ctx))
        for column, value in (
            (Port.name, name),
            (Port.device_id, device_id),
            (Port.device_owner, device_owner),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        with self.core.db.read() as session:
            if network is not None:
                stmt = stmt.where(Port.network_id == find_network(session, ctx, network).id)
            rows = paginate(
                session, stmt, Port, limit=limit, marker=marker, sort_column=Port.created_at
            )
            return port_infos(session, rows)

    def get(self, ctx: RequestContext, ref: str) -> PortInfo:
        with self.core.db.read() as session:
            port = find_port(session, ctx, ref)
            policy.enforce(ctx, "network:port:show", project_id=port.project_id)
            return port_infos(session, [port])[0]

    def update(self, ctx: RequestContext, ref: str, changes: dict[str, Any]) -> PortInfo:
        """name, description, security_groups, port_security_enabled, allowed_address_pairs."""
        with self.core.db.transaction() as session:
            port = find_port(session, ctx, ref)
            policy.enforce(ctx, "network:port:update", project_id=port.project_id)
            values = dict(changes)
            groups = values.pop("security_groups", None)
            if not charged(port) and (groups is not None or set(values) - {"name", "description"}):
                raise Conflict(
                    f"port {port.id} belongs to {port.device_owner}; only its name and "
                    "description change",
                    code="nubes.port.in_use",
                )
            if "allowed_address_pairs" in values:
                values["allowed_address_pairs"] = check_pairs(values["allowed_address_pairs"])
            enabled = values.get("port_security_enabled", port.port_security_enabled)
            current = port_infos(session, [port])[0].security_groups
            _check_security(
                enabled,
                groups if groups is not None else ([] if not enabled else current),
                values.get("allowed_address_pairs", port.allowed_address_pairs),
            )
            if values:
                compare_and_swap(session, Port, port.id, port.generation, values)
                session.refresh(port)
            if groups is not None:
                set_groups(session, ctx, self.settings, port, groups)
            elif not enabled:
                set_groups(session, ctx, self.settings, port, [])
            events.record(
                session,
                ctx,
                "port.updated",
                "port",
                port.id,
                project_id=port.project_id,
                payload={"changed": sorted(changes)},
            )
            return port_infos(session, [port])[0]

    def delete(self, ctx: RequestContext, ref: str) -> None:
        with self.core.db.transaction() as session:
            port = find_port(session, ctx, ref)
            policy.enforce(ctx, "network:port:delete", project_id=port.project_id)
            if not charged(port):
                raise Conflict(
                    f"port {port.id} belongs to {port.device_owner} {port.device_id}; it goes "
                    "with it (router remove-subnet, router unset gateway, floating-ip delete)",
                    code="nubes.port.in_use",
                )
            if port.device_owner == COMPUTE and port.device_id:
                raise Conflict(
                    f"port {port.id} is attached to instance {port.device_id}; delete the "
                    "instance first",
                    code="nubes.port.in_use",
                )
            destroy_port(session, ctx, self.settings, port)
