"""Floating IPs: an address of an external network (held by a ``network:floatingip`` port),
mapped 1:1 (DNAT and SNAT) to one fixed address of a port. The mapping happens on the router
that joins the port's subnet to that external network, so association needs such a router:
an interface on the fixed address's subnet and its gateway on the floating IP's network.

``status`` is ACTIVE while associated, DOWN otherwise. One fixed address has at most one
floating IP (a unique constraint on (port, fixed address)).
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from nubes.identity import policy, quotas
from nubes.network import ipam
from nubes.network.addresses import normalise_ip
from nubes.network.common import FLOATING_IP, RESERVED_PREFIX, ROUTER_INTERFACE, Service
from nubes.network.lookup import find_floating_ip, find_network, find_port, own_clause
from nubes.network.ports import FixedIp, destroy_port, make_port
from nubes.store import events
from nubes.store.models import FloatingIp, IpAllocation, Network, Port, Router, Subnet
from nubes.store.query import delete_row, paginate


def _router_between(session: Session, subnet_id: str, external_network_id: str) -> Router | None:
    return session.scalar(
        select(Router)
        .join(Port, (Port.device_id == Router.id) & (Port.device_owner == ROUTER_INTERFACE))
        .join(IpAllocation, IpAllocation.port_id == Port.id)
        .where(
            IpAllocation.subnet_id == subnet_id,
            Router.external_network_id == external_network_id,
        )
        .limit(1)
    )


def _fixed_address(session: Session, port: Port, wanted: str | None) -> tuple[str, str]:
    """(subnet id, address) of the port to map: ``wanted``, or its first IPv4 address."""
    held = ipam.addresses_of(session, [port.id])[port.id]
    if wanted is not None:
        normal = normalise_ip(wanted)
        for subnet_id, address in held:
            if address == normal:
                return subnet_id, address
        raise InvalidInput(f"fixed_ip_address: {wanted} is not an address of port {port.id}")
    for subnet_id, address in held:
        if ":" not in address:
            return subnet_id, address
    raise InvalidInput(f"port_id: port {port.id} has no IPv4 address to map a floating IP to")


class FloatingIpService(Service):
    def create(
        self,
        ctx: RequestContext,
        network: str,
        *,
        port: str | None = None,
        fixed_ip_address: str | None = None,
        floating_ip_address: str | None = None,
        description: str = "",
    ) -> FloatingIp:
        policy.enforce(ctx, "network:floating_ip:create", project_id=ctx.project_id)
        if floating_ip_address is not None and not ctx.is_cloud_admin:
            raise Forbidden("floating_ip_address: only a cloud admin may choose the address")
        assert ctx.project_id is not None
        with self.core.db.transaction() as session:
            net = find_network(session, ctx, network)
            if not net.router_external:
                raise InvalidInput(
                    f"network {net.name!r} is not external; floating IPs come from a network "
                    "made with --external",
                    code="nubes.router.gateway_invalid",
                )
            quotas.charge(
                session, ctx.project_id, {"floating_ips": 1}, self.settings.default_quotas
            )
            fip_id = str(uuid.uuid4())
            held = make_port(
                session,
                ctx,
                self.settings,
                net,
                ctx.project_id,
                fixed_ips=[FixedIp(ip_address=floating_ip_address)]
                if floating_ip_address
                else None,
                port_security_enabled=False,
                device_owner=FLOATING_IP,
                device_id=fip_id,
            )
            if not held.fixed_ips:
                raise Conflict(
                    f"external network {net.name!r} has no subnet to take the address from",
                    code="nubes.router.gateway_invalid",
                )
            row = FloatingIp(
                id=fip_id,
                project_id=ctx.project_id,
                description=description,
                floating_network_id=net.id,
                floating_port_id=held.port.id,
                floating_ip_address=held.fixed_ips[0][1],
            )
            session.add(row)
            session.flush()
            self._event(session, ctx, row, "floating_ip.created", address=row.floating_ip_address)
            if port is not None:
                self._associate(session, ctx, row, port, fixed_ip_address)
            return row

    def _event(
        self, session: Session, ctx: RequestContext, row: FloatingIp, kind: str, **payload: object
    ) -> None:
        events.record(
            session,
            ctx,
            kind,
            "floating_ip",
            row.id,
            project_id=row.project_id,
            payload=dict(payload),
        )

    def list_floating_ips(
        self,
        ctx: RequestContext,
        *,
        network: str | None = None,
        port: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[FloatingIp]:
        policy.enforce(ctx, "network:floating_ip:list", project_id=ctx.project_id)
        stmt = select(FloatingIp).where(own_clause(FloatingIp, ctx))
        with self.core.db.read() as session:
            if network is not None:
                net_id = find_network(session, ctx, network).id
                stmt = stmt.where(FloatingIp.floating_network_id == net_id)
            if port is not None:
                stmt = stmt.where(FloatingIp.port_id == find_port(session, ctx, port).id)
            return paginate(
                session,
                stmt,
                FloatingIp,
                limit=limit,
                marker=marker,
                sort_column=FloatingIp.created_at,
            )

    def get(self, ctx: RequestContext, ref: str) -> FloatingIp:
        with self.core.db.read() as session:
            row = find_floating_ip(session, ctx, ref)
            policy.enforce(ctx, "network:floating_ip:show", project_id=row.project_id)
            return row

    def associate(
        self,
        ctx: RequestContext,
        ref: str,
        port: str | None,
        fixed_ip_address: str | None = None,
    ) -> FloatingIp:
        """Map to ``port`` (its ``fixed_ip_address``, or its first IPv4 address); ``port``
        None unmaps."""
        with self.core.db.transaction() as session:
            row = find_floating_ip(session, ctx, ref)
            policy.enforce(ctx, "network:floating_ip:update", project_id=row.project_id)
            if port is None:
                self._disassociate(session, ctx, row)
            else:
                self._associate(session, ctx, row, port, fixed_ip_address)
            return row

    def _associate(
        self,
        session: Session,
        ctx: RequestContext,
        row: FloatingIp,
        port_ref: str,
        fixed_ip_address: str | None,
    ) -> None:
        target = find_port(session, ctx, port_ref)
        if target.device_owner.startswith(RESERVED_PREFIX):
            raise InvalidInput(
                f"port_id: port {target.id} belongs to {target.device_owner}; map floating IPs "
                "to instance or user ports"
            )
        subnet_id, address = _fixed_address(session, target, fixed_ip_address)
        router = _router_between(session, subnet_id, row.floating_network_id)
        if router is None:
            subnet = session.get(Subnet, subnet_id)
            external = session.get(Network, row.floating_network_id)
            raise Conflict(
                f"no router joins subnet {subnet.name if subnet else subnet_id} of port "
                f"{target.id} to external network {external.name if external else ''!r}: "
                "give a router an interface on the subnet (router add-subnet) and its gateway "
                "on that network (router set --external-gateway)",
                code="nubes.floating_ip.unreachable",
            )
        taken = session.scalar(
            select(FloatingIp.floating_ip_address).where(
                FloatingIp.port_id == target.id,
                FloatingIp.fixed_ip_address == address,
                FloatingIp.id != row.id,
            )
        )
        if taken is not None:
            raise _fixed_taken(address, taken)
        try:
            with session.begin_nested():
                row.port_id, row.fixed_ip_address, row.router_id = target.id, address, router.id
                row.status = "ACTIVE"
                row.generation += 1
                session.flush()
        except IntegrityError:
            raise _fixed_taken(address, "another floating IP") from None
        self._event(session, ctx, row, "floating_ip.associated", port_id=target.id, fixed=address)

    def _disassociate(self, session: Session, ctx: RequestContext, row: FloatingIp) -> None:
        row.port_id = row.fixed_ip_address = row.router_id = None
        row.status = "DOWN"
        row.generation += 1
        session.flush()
        self._event(session, ctx, row, "floating_ip.disassociated")

    def delete(self, ctx: RequestContext, ref: str) -> None:
        with self.core.db.transaction() as session:
            row = find_floating_ip(session, ctx, ref)
            policy.enforce(ctx, "network:floating_ip:delete", project_id=row.project_id)
            quotas.release(session, row.project_id, {"floating_ips": 1})
            if not delete_row(session, FloatingIp, row.id):
                raise NotFound(f"no floating IP {ref!r}", code="nubes.floating_ip.not_found")
            holder = session.get(Port, row.floating_port_id)
            if holder is not None:
                destroy_port(session, ctx, self.settings, holder)
            self._event(session, ctx, row, "floating_ip.deleted", address=row.floating_ip_address)


def _fixed_taken(address: str, holder: str) -> Conflict:
    return Conflict(
        f"{address} already has floating IP {holder}; disassociate it first",
        code="nubes.floating_ip.in_use",
    )
