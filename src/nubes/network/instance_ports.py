"""An instance's NICs: the ports compute creates, binds and releases inside its own
instance-create and -delete transactions (every function takes the caller's open session).

- :func:`allocate_instance_ports`: one port per :class:`NicRequest`, made on a network
  (``device_owner`` compute, deleted with the instance, counted in the ``ports`` quota) or a
  pre-made port claimed (it must be free: no device, no host; it survives the instance, as in
  Neutron).
- :func:`bind_instance_ports`: the ports move to the instance's host, which gets a DHCP port on
  each of their networks (see :mod:`nubes.network.dhcp`).
- :func:`release_instance_ports`: made ports go (their addresses into cool-down), claimed ones
  are unbound, and DHCP ports no longer needed on the host go too.

The settings (quota defaults, cool-down) are the ones given, else those the controller's
network services were built with (:func:`configure`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import bindparam, exists, select, update
from sqlalchemy.orm import Session

from nubes.config import Settings
from nubes.domain import netdesired
from nubes.domain.context import RequestContext
from nubes.domain.errors import Conflict, InvalidInput
from nubes.identity import quotas
from nubes.network import ipam
from nubes.network.common import COMPUTE
from nubes.network.dhcp import sync_dhcp
from nubes.network.lookup import find_network, find_port, network_clause
from nubes.network.ports import FixedIp, check_network_for_port, destroy_port, make_port
from nubes.store.models import Network, Port, Subnet
from nubes.store.query import table_of

DEFAULT_NETWORK = "default"

_configured: list[Settings] = []


def configure(settings: Settings) -> None:
    """The settings used when a caller gives none (set when the network services are built)."""
    _configured[:] = [settings]


def _settings(given: Settings | None) -> Settings:
    if given is not None:
        return given
    if not _configured:
        raise RuntimeError("nubes.network is not configured: pass settings=")
    return _configured[0]


@dataclass(frozen=True)
class NicRequest:
    """A NIC asked for: a network (id or name), optionally with its fixed IP; or a port (id or
    name) made beforehand; or neither: the project's network (see :func:`default_network`)."""

    network: str | None = None
    port: str | None = None
    fixed_ip: str | None = None


@dataclass(frozen=True)
class InstanceNic:
    """What the instance's desired state needs of one NIC, eth0 first."""

    id: str
    mac: str
    network_id: str
    mtu: int
    #: (subnet id, address)
    fixed_ips: tuple[tuple[str, str], ...]
    #: the subnets of those addresses (CIDR, gateway, DNS servers, routes, DHCP or not)
    subnets: tuple[netdesired.Subnet, ...]

    @property
    def tap(self) -> str:
        return netdesired.tap_name(self.id)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "tap": self.tap}


def default_network(session: Session, ctx: RequestContext) -> Network:
    """The project's only network; else the visible network named ``default``."""
    own = list(
        session.scalars(
            select(Network)
            .where(Network.project_id == ctx.project_id, Network.router_external.is_(False))
            .limit(2)
        )
    )
    if len(own) == 1:
        return own[0]
    named = list(
        session.scalars(
            select(Network)
            .where(Network.name == DEFAULT_NETWORK, network_clause(ctx))
            .order_by(Network.project_id != ctx.project_id)
            .limit(2)
        )
    )
    if named:
        return named[0]
    raise InvalidInput(
        f"networks: the project has {'several networks' if own else 'no network'} and there is "
        "no network named 'default'; name the network for each NIC"
    )


def allocate_instance_ports(
    session: Session,
    ctx: RequestContext,
    instance_id: str,
    hostname: str,
    nics: Sequence[NicRequest],
    *,
    settings: Settings | None = None,
) -> list[Port]:
    """The instance's ports, in NIC order; made ports are charged to ``ctx``'s project."""
    config = _settings(settings)
    assert ctx.project_id is not None
    made = sum(1 for nic in nics if nic.port is None)
    if made:
        quotas.charge(session, ctx.project_id, {"ports": made}, config.default_quotas)
    ports: list[Port] = []
    for index, nic in enumerate(nics):
        if nic.port is not None:
            ports.append(_claim(session, ctx, instance_id, hostname, nic, index))
            continue
        network = (
            find_network(session, ctx, nic.network)
            if nic.network is not None
            else default_network(session, ctx)
        )
        check_network_for_port(ctx, network)
        ports.append(
            make_port(
                session,
                ctx,
                config,
                network,
                ctx.project_id,
                name=f"{hostname}-{index}"[:64],
                fixed_ips=[FixedIp(ip_address=nic.fixed_ip)] if nic.fixed_ip else None,
                device_owner=COMPUTE,
                device_id=instance_id,
                dns_name=hostname[:64],
                auto_delete=True,
                device_index=index,
            ).port
        )
    return ports


def _claim(
    session: Session,
    ctx: RequestContext,
    instance_id: str,
    hostname: str,
    nic: NicRequest,
    index: int,
) -> Port:
    if nic.network is not None or nic.fixed_ip is not None:
        raise InvalidInput("nics: give a port, or a network with an optional fixed_ip, not both")
    assert nic.port is not None
    port = find_port(session, ctx, nic.port)
    if port.device_owner not in ("", COMPUTE) or port.device_id or port.host_id:
        user = f"{port.device_owner or 'a device'} {port.device_id}".strip()
        raise Conflict(f"port {port.id} is in use by {user}", code="nubes.port.in_use")
    claimed = session.execute(
        update(Port)
        .where(Port.id == port.id, Port.generation == port.generation, Port.device_id == "")
        .values(
            device_owner=COMPUTE,
            device_id=instance_id,
            dns_name=hostname[:64],
            device_index=index,
            generation=port.generation + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"port {port.id} was just taken by another device", code="nubes.port.in_use")
    session.refresh(port)
    return port


#: the instances' ports (compute's own), in NIC order; built once, they run on every report
_PORTS_OF = (
    select(Port)
    .where(Port.device_id.in_(bindparam("instance_ids", expanding=True)))
    .where(Port.device_owner == COMPUTE)
    .order_by(Port.device_index, Port.created_at)
)
_PORT_ROWS = table_of(Port).c
_OWN_PORT = (_PORT_ROWS.device_owner == COMPUTE) & (
    _PORT_ROWS.device_id == bindparam("instance_id")
)
_HAS_PORTS = select(exists().where(_OWN_PORT))
_STALE_PORTS = select(_PORT_ROWS.id).where(_OWN_PORT, _PORT_ROWS.status != bindparam("status"))


def _instance_ports(session: Session, instance_id: str) -> list[Port]:
    return list(session.scalars(_PORTS_OF, {"instance_ids": [instance_id]}))


def bind_instance_ports(
    session: Session,
    instance_id: str,
    host_id: str,
    *,
    ctx: RequestContext | None = None,
    settings: Settings | None = None,
) -> None:
    """Bind the instance's ports to ``host_id``; DHCP ports follow (on the new host, and off
    a previous one that no longer needs them)."""
    config = _settings(settings)
    actor = ctx or RequestContext.system()
    ports = _instance_ports(session, instance_id)
    previous = {(p.network_id, p.host_id) for p in ports if p.host_id and p.host_id != host_id}
    session.execute(
        update(Port)
        .where(Port.id.in_([p.id for p in ports]))
        .values(host_id=host_id)
        .execution_options(synchronize_session=False)
    )
    for port in ports:
        port.host_id = host_id
    _sync(session, actor, config, {(p.network_id, host_id) for p in ports} | previous)


def _sync(
    session: Session,
    ctx: RequestContext,
    settings: Settings,
    pairs: Iterable[tuple[str, str | None]],
) -> None:
    by_network: dict[str, set[str]] = {}
    for network_id, host_id in pairs:
        if host_id is not None:
            by_network.setdefault(network_id, set()).add(host_id)
    for network_id in sorted(by_network):
        sync_dhcp(session, ctx, settings, network_id, by_network[network_id])


def release_instance_ports(
    session: Session,
    instance_id: str,
    *,
    ctx: RequestContext | None = None,
    settings: Settings | None = None,
) -> None:
    """Delete the ports made for the instance, unbind the ones it claimed."""
    config = _settings(settings)
    actor = ctx or RequestContext.system()
    if not session.scalar(_HAS_PORTS, {"instance_id": instance_id}):
        return  # most deletes: a plain query says so, without loading ports
    ports = _instance_ports(session, instance_id)
    touched = {(p.network_id, p.host_id) for p in ports}
    for port in ports:
        if port.auto_delete:
            destroy_port(session, actor, config, port)
        else:
            session.execute(
                update(Port)
                .where(Port.id == port.id)
                .values(
                    device_owner="",
                    device_id="",
                    host_id=None,
                    dns_name="",
                    device_index=None,
                    status="DOWN",
                    generation=Port.generation + 1,
                )
                .execution_options(synchronize_session=False)
            )
    _sync(session, actor, config, touched)


def instance_nics(session: Session, instance_id: str) -> list[InstanceNic]:
    """The instance's NICs in order, in four queries whatever their number."""
    return instances_nics(session, [instance_id])[instance_id]


def instances_nics(session: Session, instance_ids: Sequence[str]) -> dict[str, list[InstanceNic]]:
    """Each instance's NICs in order (see :func:`instance_nics`), in four queries whatever the
    number of instances; one when none has a port."""
    nics: dict[str, list[InstanceNic]] = {instance_id: [] for instance_id in instance_ids}
    if not nics:
        return nics
    ports = list(session.scalars(_PORTS_OF, {"instance_ids": list(nics)}))
    if not ports:
        return nics
    addresses = ipam.addresses_of(session, [p.id for p in ports])
    network_ids = {p.network_id for p in ports}
    mtus = dict(
        session.execute(select(Network.id, Network.mtu).where(Network.id.in_(network_ids))).all()
    )
    subnet_ids = {s for pairs in addresses.values() for s, _ in pairs}
    subnets = {
        s.id: desired_subnet(s)
        for s in session.scalars(select(Subnet).where(Subnet.id.in_(subnet_ids)))
    }
    for p in ports:
        nics[p.device_id].append(
            InstanceNic(
                id=p.id,
                mac=p.mac_address,
                network_id=p.network_id,
                mtu=int(mtus[p.network_id]),
                fixed_ips=tuple(addresses[p.id]),
                subnets=tuple(subnets[s] for s in dict.fromkeys(s for s, _ in addresses[p.id])),
            )
        )
    return nics


def desired_subnet(row: Subnet) -> netdesired.Subnet:
    return netdesired.Subnet(
        id=row.id,
        cidr=row.cidr,
        gateway_ip=row.gateway_ip,
        enable_dhcp=row.enable_dhcp,
        ip_version=row.ip_version,
        dns_nameservers=tuple(row.dns_nameservers),
        host_routes=tuple((d, n) for d, n in row.host_routes),
    )


def set_instance_ports_status(session: Session, instance_id: str, status: str) -> int:
    """ACTIVE once the instance runs (its agent has plugged it), DOWN when it stops. Only the
    ports whose status differs are written: a write to ``ports`` wakes every agent."""
    stale = list(session.scalars(_STALE_PORTS, {"instance_id": instance_id, "status": status}))
    if stale:
        session.execute(
            update(Port)
            .where(Port.id.in_(stale))
            .values(status=status)
            .execution_options(synchronize_session=False)
        )
    return len(stale)
