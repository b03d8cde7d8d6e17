"""The network a new cloud starts with: ``default`` (vxlan, its VNI allocated) with the subnet
``default-subnet`` (``default_network_cidr``) and the default security group, for the admin
project. Idempotent: what exists is kept as it is, what is missing is made."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from nubes.config import Settings
from nubes.domain.context import RequestContext
from nubes.identity import quotas
from nubes.network.addresses import plan_subnet
from nubes.network.instance_ports import DEFAULT_NETWORK
from nubes.network.networks import insert_network, max_mtu
from nubes.network.security_groups import ensure_default_group
from nubes.network.subnets import insert_subnet
from nubes.store import events
from nubes.store.models import Network, Subnet

DEFAULT_SUBNET = "default-subnet"


def ensure_default_network(session: Session, settings: Settings, project_id: str) -> Network:
    ctx = RequestContext.system()
    ensure_default_group(session, ctx, project_id, settings.default_quotas)
    network = session.scalar(
        select(Network).where(Network.project_id == project_id, Network.name == DEFAULT_NETWORK)
    )
    if network is None:
        quotas.charge(session, project_id, {"networks": 1}, settings.default_quotas)
        network = insert_network(
            session,
            settings,
            {
                "name": DEFAULT_NETWORK,
                "project_id": project_id,
                "description": "Made by nubes up",
                "network_type": "vxlan",
                "physical_network": "",
                "segmentation_id": None,
                "mtu": max_mtu(settings, "vxlan"),
            },
        )
        events.record(
            session,
            ctx,
            "network.created",
            "network",
            network.id,
            project_id=project_id,
            payload={"name": DEFAULT_NETWORK, "segment": network.segmentation_id},
        )
    has_subnet = session.scalar(
        select(Subnet.id).where(Subnet.network_id == network.id, Subnet.name == DEFAULT_SUBNET)
    )
    if has_subnet is None:
        plan = plan_subnet(settings.default_network_cidr, dns_nameservers=())
        insert_subnet(session, ctx, settings, network, plan, name=DEFAULT_SUBNET)
    return network
