"""Finding networking resources within the caller's sight, by id or by name.

Visibility, as in Neutron: a project sees its own resources; every project also sees shared
and external networks (and the subnets on them). Anything else is *not found* (404), never
forbidden. A name that matches several visible resources is a 409 asking for the id.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import or_, select, true
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.domain.errors import Conflict, NotFound
from nubes.store.models import FloatingIp, Network, Port, Router, SecurityGroup, Subnet

T = TypeVar("T")


def own_clause(model: Any, ctx: RequestContext) -> Any:
    """The rows of the caller's project (a cloud admin: every row)."""
    if ctx.is_cloud_admin:
        return true()
    return model.project_id == ctx.project_id


def network_clause(ctx: RequestContext) -> Any:
    if ctx.is_cloud_admin:
        return true()
    return or_(Network.project_id == ctx.project_id, Network.shared, Network.router_external)


def subnet_clause(ctx: RequestContext) -> Any:
    if ctx.is_cloud_admin:
        return true()
    visible_networks = select(Network.id).where(network_clause(ctx))
    return or_(Subnet.project_id == ctx.project_id, Subnet.network_id.in_(visible_networks))


def find_by_ref(session: Session, model: type[T], ref: str, scope: Any, kind: str, code: str) -> T:
    """By id, else by name, among the rows ``scope`` lets the caller see."""
    table: Any = model
    row = session.scalar(select(model).where(table.id == ref, scope))
    if row is not None:
        return row
    matches = list(session.scalars(select(model).where(table.name == ref, scope).limit(2)))
    if len(matches) > 1:
        raise Conflict(
            f"several {kind}s are named {ref!r}; use the id",
            code="nubes.network.ambiguous_name",
        )
    if not matches:
        raise NotFound(f"no {kind} {ref!r}", code=code)
    return matches[0]


def find_network(session: Session, ctx: RequestContext, ref: str) -> Network:
    return find_by_ref(
        session, Network, ref, network_clause(ctx), "network", "nubes.network.not_found"
    )


def find_subnet(session: Session, ctx: RequestContext, ref: str) -> Subnet:
    return find_by_ref(session, Subnet, ref, subnet_clause(ctx), "subnet", "nubes.subnet.not_found")


def find_port(session: Session, ctx: RequestContext, ref: str) -> Port:
    return find_by_ref(session, Port, ref, own_clause(Port, ctx), "port", "nubes.port.not_found")


def find_security_group(session: Session, ctx: RequestContext, ref: str) -> SecurityGroup:
    return find_by_ref(
        session,
        SecurityGroup,
        ref,
        own_clause(SecurityGroup, ctx),
        "security group",
        "nubes.security_group.not_found",
    )


def find_router(session: Session, ctx: RequestContext, ref: str) -> Router:
    return find_by_ref(
        session, Router, ref, own_clause(Router, ctx), "router", "nubes.router.not_found"
    )


def find_floating_ip(session: Session, ctx: RequestContext, ref: str) -> FloatingIp:
    """By id or by address (floating IPs have no name)."""
    scope = own_clause(FloatingIp, ctx)
    row = session.scalar(
        select(FloatingIp).where(
            or_(FloatingIp.id == ref, FloatingIp.floating_ip_address == ref), scope
        )
    )
    if row is None:
        raise NotFound(f"no floating IP {ref!r}", code="nubes.floating_ip.not_found")
    return row


def subnet_on_network(session: Session, network: Network, ref: str) -> Subnet:
    """A subnet of ``network`` (visible whenever the network is)."""
    try:
        return find_by_ref(
            session,
            Subnet,
            ref,
            Subnet.network_id == network.id,
            "subnet",
            "nubes.subnet.not_found",
        )
    except NotFound:
        raise NotFound(
            f"network {network.name!r} has no subnet {ref!r}", code="nubes.subnet.not_found"
        ) from None
