"""Routers: join subnets to each other and, through a gateway on an external network (with
SNAT unless turned off), to the outside; floating IPs are mapped on the gateway.

A router's interfaces and gateway are ports (device_id the router) bound to the router's host.
Placement: a router goes to a host that is up (``monitored``) and enabled, preferring the head
node's own agent — the host whose address is a loopback address, since the local agent reaches
the controller over loopback — then the host with the fewest routers. A router made while no
host is up is placed when it next gets an interface or a gateway. Routers do not move when
their host goes down (no failover yet).

Every interface or gateway change locks the router row first, so two racing changes of one
router cannot both pass the overlap check.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.domain.errors import Conflict, InvalidInput, NotFound
from nubes.identity import policy, quotas
from nubes.network import ipam
from nubes.network.common import ROUTER_GATEWAY, ROUTER_INTERFACE, Service
from nubes.network.lookup import find_network, find_router, find_subnet, own_clause
from nubes.network.ports import FixedIp, destroy_port, make_port
from nubes.store import events
from nubes.store.cas import compare_and_swap
from nubes.store.models import FloatingIp, Host, IpAllocation, Network, Port, Router, Subnet
from nubes.store.query import delete_row, paginate


@dataclass(frozen=True)
class Interface:
    subnet_id: str
    port_id: str
    ip_address: str


@dataclass(frozen=True)
class RouterInfo:
    router: Router
    #: (subnet id, address) of the gateway port
    gateway_ips: list[tuple[str, str]] = field(default_factory=list)
    gateway_port_id: str | None = None
    interfaces: list[Interface] = field(default_factory=list)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address == "localhost"


def choose_host(session: Session) -> str | None:
    """See the module docstring."""
    load = (
        select(Router.host_id, func.count().label("routers"))
        .where(Router.host_id.is_not(None))
        .group_by(Router.host_id)
        .subquery()
    )
    rows = session.execute(
        select(Host.id, Host.name, Host.address, func.coalesce(load.c.routers, 0))
        .outerjoin(load, load.c.host_id == Host.id)
        .where(Host.state == "monitored", Host.enabled)
    ).all()
    if not rows:
        return None
    best = min(rows, key=lambda r: (not _is_loopback(r[2]), r[3], r[1]))
    return str(best[0])


def place(session: Session, router: Router) -> None:
    """Give an unplaced router a host, and bind its ports there."""
    if router.host_id is not None:
        return
    host_id = choose_host(session)
    if host_id is None:
        return
    router.host_id = host_id
    session.execute(
        update(Port)
        .where(
            Port.device_id == router.id, Port.device_owner.in_((ROUTER_GATEWAY, ROUTER_INTERFACE))
        )
        .values(host_id=host_id)
        .execution_options(synchronize_session=False)
    )


def router_infos(session: Session, routers: Sequence[Router]) -> list[RouterInfo]:
    """Routers with their gateway and interfaces: two queries for any number of routers."""
    ids = [r.id for r in routers]
    ports: list[Port] = []
    if ids:
        ports = list(
            session.scalars(
                select(Port)
                .where(
                    Port.device_id.in_(ids),
                    Port.device_owner.in_((ROUTER_GATEWAY, ROUTER_INTERFACE)),
                )
                .order_by(Port.created_at, Port.id)
            )
        )
    addresses = ipam.addresses_of(session, [p.id for p in ports])
    infos = {r.id: RouterInfo(r) for r in routers}
    for port in ports:
        info = infos[port.device_id]
        if port.device_owner == ROUTER_GATEWAY:
            infos[port.device_id] = RouterInfo(
                info.router, addresses[port.id], port.id, info.interfaces
            )
        else:
            info.interfaces.extend(Interface(s, port.id, a) for s, a in addresses[port.id])
    return [infos[r.id] for r in routers]


def _lock(session: Session, router: Router) -> None:
    session.execute(select(Router.id).where(Router.id == router.id).with_for_update())


def _gateway_port(session: Session, router: Router) -> Port | None:
    return session.scalar(
        select(Port).where(Port.device_id == router.id, Port.device_owner == ROUTER_GATEWAY)
    )


def _interface_ports(session: Session, router: Router) -> list[Port]:
    return list(
        session.scalars(
            select(Port).where(Port.device_id == router.id, Port.device_owner == ROUTER_INTERFACE)
        )
    )


def _fips_through(session: Session, router: Router) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(FloatingIp).where(FloatingIp.router_id == router.id)
        )
        or 0
    )


class RouterService(Service):
    def create(
        self,
        ctx: RequestContext,
        name: str,
        *,
        description: str = "",
        external_network: str | None = None,
        enable_snat: bool = True,
        admin_state_up: bool = True,
    ) -> RouterInfo:
        policy.enforce(ctx, "network:router:create", project_id=ctx.project_id)
        assert ctx.project_id is not None
        with self.core.db.transaction() as session:
            quotas.charge(session, ctx.project_id, {"routers": 1}, self.settings.default_quotas)
            router = Router(
                name=name,
                project_id=ctx.project_id,
                description=description,
                enable_snat=enable_snat,
                admin_state_up=admin_state_up,
            )
            session.add(router)
            session.flush()
            place(session, router)
            events.record(
                session,
                ctx,
                "router.created",
                "router",
                router.id,
                project_id=router.project_id,
                payload={"name": name, "host_id": router.host_id},
            )
            if external_network is not None:
                self._set_gateway(session, ctx, router, external_network, enable_snat)
            return router_infos(session, [router])[0]

    def list_routers(
        self,
        ctx: RequestContext,
        *,
        name: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[RouterInfo]:
        policy.enforce(ctx, "network:router:list", project_id=ctx.project_id)
        stmt = select(Router).where(own_clause(Router, ctx))
        if name is not None:
            stmt = stmt.where(Router.name == name)
        with self.core.db.read() as session:
            rows = paginate(
                session, stmt, Router, limit=limit, marker=marker, sort_column=Router.created_at
            )
            return router_infos(session, rows)

    def get(self, ctx: RequestContext, ref: str) -> RouterInfo:
        with self.core.db.read() as session:
            router = find_router(session, ctx, ref)
            policy.enforce(ctx, "network:router:show", project_id=router.project_id)
            return router_infos(session, [router])[0]

    def update(self, ctx: RequestContext, ref: str, changes: dict[str, Any]) -> RouterInfo:
        """name, description, admin_state_up."""
        with self.core.db.transaction() as session:
            router = find_router(session, ctx, ref)
            policy.enforce(ctx, "network:router:update", project_id=router.project_id)
            compare_and_swap(session, Router, router.id, router.generation, changes)
            session.refresh(router)
            self._event(session, ctx, router, "router.updated", changed=sorted(changes))
            return router_infos(session, [router])[0]

    def delete(self, ctx: RequestContext, ref: str) -> None:
        with self.core.db.transaction() as session:
            router = find_router(session, ctx, ref)
            policy.enforce(ctx, "network:router:delete", project_id=router.project_id)
            _lock(session, router)
            interfaces = _interface_ports(session, router)
            if interfaces:
                raise Conflict(
                    f"router {router.name!r} still has {len(interfaces)} interface(s); "
                    "remove them first (router remove-subnet)",
                    code="nubes.router.in_use",
                )
            self._refuse_if_fips(session, router, "deleted")
            gateway = _gateway_port(session, router)
            if gateway is not None:
                destroy_port(session, ctx, self.settings, gateway)
            quotas.release(session, router.project_id, {"routers": 1})
            if not delete_row(session, Router, router.id):
                raise NotFound(f"no router {ref!r}", code="nubes.router.not_found")
            self._event(session, ctx, router, "router.deleted", name=router.name)

    def _event(
        self, session: Session, ctx: RequestContext, router: Router, kind: str, **payload: Any
    ) -> None:
        events.record(
            session, ctx, kind, "router", router.id, project_id=router.project_id, payload=payload
        )

    def _refuse_if_fips(self, session: Session, router: Router, action: str) -> None:
        fips = _fips_through(session, router)
        if fips:
            raise Conflict(
                f"{fips} floating IP(s) are mapped through router {router.name!r}, so its "
                f"gateway cannot be {action}; disassociate them first",
                code="nubes.router.in_use",
            )

    # the gateway ------------------------------------------------------------------------

    def set_gateway(
        self, ctx: RequestContext, ref: str, network: str, *, enable_snat: bool = True
    ) -> RouterInfo:
        with self.core.db.transaction() as session:
            router = find_router(session, ctx, ref)
            policy.enforce(ctx, "network:router:update", project_id=router.project_id)
            self._set_gateway(session, ctx, router, network, enable_snat)
            return router_infos(session, [router])[0]

    def _set_gateway(
        self, session: Session, ctx: RequestContext, router: Router, ref: str, snat: bool
    ) -> None:
        _lock(session, router)
        network = find_network(session, ctx, ref)
        if not network.router_external:
            raise InvalidInput(
                f"network {network.name!r} is not external; a router's gateway goes on a "
                "network made with --external",
                code="nubes.router.gateway_invalid",
            )
        current = _gateway_port(session, router)
        if current is not None and current.network_id != network.id:
            self._refuse_if_fips(session, router, "moved")
            destroy_port(session, ctx, self.settings, current)
            current = None
        place(session, router)
        if current is None:
            if not session.scalar(select(Subnet.id).where(Subnet.network_id == network.id)):
                raise Conflict(
                    f"external network {network.name!r} has no subnet to take the gateway "
                    "address from",
                    code="nubes.router.gateway_invalid",
                )
            make_port(
                session,
                ctx,
                self.settings,
                network,
                router.project_id,
                name=f"gateway-{router.name}",
                port_security_enabled=False,
                device_owner=ROUTER_GATEWAY,
                device_id=router.id,
                host_id=router.host_id,
            )
        router.external_network_id, router.enable_snat = network.id, snat
        router.generation += 1
        session.flush()
        self._event(session, ctx, router, "router.gateway_set", network_id=network.id, snat=snat)

    def clear_gateway(self, ctx: RequestContext, ref: str) -> RouterInfo:
        with self.core.db.transaction() as session:
            router = find_router(session, ctx, ref)
            policy.enforce(ctx, "network:router:update", project_id=router.project_id)
            _lock(session, router)
            self._refuse_if_fips(session, router, "removed")
            gateway = _gateway_port(session, router)
            if gateway is not None:
                destroy_port(session, ctx, self.settings, gateway)
            router.external_network_id = None
            router.generation += 1
            session.flush()
            self._event(session, ctx, router, "router.gateway_cleared")
            return router_infos(session, [router])[0]

    # interfaces -------------------------------------------------------------------------

    def add_interface(self, ctx: RequestContext, ref: str, subnet_ref: str) -> RouterInfo:
        """The router takes the subnet's gateway address on a new port."""
        with self.core.db.transaction() as session:
            router = find_router(session, ctx, ref)
            policy.enforce(ctx, "network:router:update", project_id=router.project_id)
            subnet = find_subnet(session, ctx, subnet_ref)
            policy.enforce(ctx, "network:router:update", project_id=subnet.project_id)
            _lock(session, router)
            network = session.get(Network, subnet.network_id)
            assert network is not None
            self._check_attachable(session, router, subnet, network)
            place(session, router)
            make_port(
                session,
                ctx,
                self.settings,
                network,
                router.project_id,
                name=f"{router.name}-{subnet.name}"[:64],
                fixed_ips=[FixedIp(subnet=subnet.id, ip_address=subnet.gateway_ip)],
                port_security_enabled=False,
                device_owner=ROUTER_INTERFACE,
                device_id=router.id,
                host_id=router.host_id,
            )
            self._event(session, ctx, router, "router.interface_added", subnet_id=subnet.id)
            return router_infos(session, [router])[0]

    def _check_attachable(
        self, session: Session, router: Router, subnet: Subnet, network: Network
    ) -> None:
        name = subnet.name or subnet.id
        if network.router_external:
            raise Conflict(
                f"subnet {name} is on external network {network.name!r}: set it as the "
                "router's gateway instead",
                code="nubes.router.interface_invalid",
            )
        if subnet.gateway_ip is None:
            raise Conflict(
                f"subnet {name} has no gateway_ip; the router interface takes that address",
                code="nubes.router.interface_invalid",
            )
        new = ipaddress.ip_network(subnet.cidr)
        attached = session.scalars(
            select(Subnet)
            .join(IpAllocation, IpAllocation.subnet_id == Subnet.id)
            .join(Port, Port.id == IpAllocation.port_id)
            .where(Port.device_id == router.id, Port.device_owner == ROUTER_INTERFACE)
        )
        for other in attached:
            if other.id == subnet.id:
                raise Conflict(
                    f"router {router.name!r} already has an interface on subnet {name}",
                    code="nubes.router.interface_invalid",
                )
            if new.overlaps(ipaddress.ip_network(other.cidr)):  # type: ignore[arg-type]
                raise Conflict(
                    f"subnet {name} ({subnet.cidr}) overlaps {other.cidr} of subnet "
                    f"{other.name or other.id}, already on router {router.name!r}",
                    code="nubes.subnet.overlap",
                )

    def remove_interface(self, ctx: RequestContext, ref: str, subnet_ref: str) -> RouterInfo:
        with self.core.db.transaction() as session:
            router = find_router(session, ctx, ref)
            policy.enforce(ctx, "network:router:update", project_id=router.project_id)
            _lock(session, router)
            subnet = find_subnet(session, ctx, subnet_ref)
            port = session.scalar(
                select(Port)
                .join(IpAllocation, IpAllocation.port_id == Port.id)
                .where(
                    Port.device_id == router.id,
                    Port.device_owner == ROUTER_INTERFACE,
                    IpAllocation.subnet_id == subnet.id,
                )
            )
            if port is None:
                raise NotFound(
                    f"router {router.name!r} has no interface on subnet {subnet.name or subnet.id}",
                    code="nubes.router.interface_not_found",
                )
            self._refuse_if_needed_by_fips(session, router, subnet)
            destroy_port(session, ctx, self.settings, port)
            self._event(session, ctx, router, "router.interface_removed", subnet_id=subnet.id)
            return router_infos(session, [router])[0]

    def _refuse_if_needed_by_fips(self, session: Session, router: Router, subnet: Subnet) -> None:
        needing = session.scalar(
            select(FloatingIp.floating_ip_address)
            .join(
                IpAllocation,
                (IpAllocation.port_id == FloatingIp.port_id)
                & (IpAllocation.ip_address == FloatingIp.fixed_ip_address),
            )
            .where(FloatingIp.router_id == router.id, IpAllocation.subnet_id == subnet.id)
            .limit(1)
        )
        if needing is not None:
            raise Conflict(
                f"floating IP {needing} reaches subnet {subnet.name or subnet.id} through this "
                "interface; disassociate it first",
                code="nubes.router.in_use",
            )
