"""Desired networks and ports for the data plane's real tests: fresh ids every time, one
test subnet (10.77.0.0/24, inside the lab's namespaces only)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import replace
from typing import Any

from nubes.domain.netdesired import HostNetworks, Network, Port, Rule, Subnet
from tests.integration.network.lab import Host, Lab

CIDR = "10.77.0.0/24"
EGRESS = (Rule("egress", "IPv4"), Rule("egress", "IPv6"))


def tcp_in(port: int) -> Rule:
    return Rule("ingress", protocol="tcp", port_min=port, port_max=port)


def network(kind: str = "local", **changes: Any) -> Network:
    subnet = Subnet(id=str(uuid.uuid4()), cidr=CIDR, gateway_ip="10.77.0.1", enable_dhcp=True)
    base = Network(
        id=str(uuid.uuid4()),
        name=kind,
        type=kind,
        mtu=1450 if kind == "vxlan" else 1500,
        segmentation_id={"vxlan": 7001, "vlan": 77}.get(kind),
        subnets=(subnet,),
    )
    return replace(base, **changes)


def port(net: Network, address: str, owner: str = "compute", **changes: Any) -> Port:
    base = Port(
        id=str(uuid.uuid4()),
        network_id=net.id,
        mac="fa:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3)),
        fixed_ips=((net.subnets[0].id, address),),
        device_owner=owner,
        hostname=f"vm{address.rsplit('.', 1)[1]}",
        rules=EGRESS if owner == "compute" else (),
    )
    return replace(base, **changes)


def converged(lab: Lab, host: Host, desired: HostNetworks, **options: Any) -> list[str]:
    report = lab.converge(host, desired, **options)
    assert report["errors"] == []
    changes: list[str] = report["changes"]
    return changes


def two_hosts(lab: Lab) -> tuple[Host, Host]:
    h1, h2 = lab.host("h1", "192.0.2.1"), lab.host("h2", "192.0.2.2")
    lab.wire(h1, h2)
    return h1, h2
