"""Desired host networks for the data plane's unit tests: a VXLAN network with a DHCP port
and two guests, built so each test changes only what it is about."""

from __future__ import annotations

from dataclasses import replace

from nubes.domain.netdesired import HostNetworks, Network, Port, Rule, Subnet

NET = "5f1c0d2e-aaaa-4bbb-8ccc-000000000001"
SUBNET = "9a8b7c6d-1111-4222-8333-000000000001"
DHCP_PORT = "d0d0d0d0-2222-4333-8444-000000000001"
VM1 = "a1a1a1a1-3333-4444-8555-000000000001"
VM2 = "b2b2b2b2-3333-4444-8555-000000000002"

SSH_FROM_SUBNET = Rule("ingress", protocol="tcp", port_min=22, port_max=22, remote=("10.0.0.0/24",))
ALL_EGRESS = (Rule("egress", "IPv4"), Rule("egress", "IPv6"))


def subnet(**changes: object) -> Subnet:
    base = Subnet(
        id=SUBNET,
        cidr="10.0.0.0/24",
        gateway_ip="10.0.0.1",
        enable_dhcp=True,
        dns_nameservers=("192.0.2.53",),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def network(**changes: object) -> Network:
    base = Network(
        id=NET,
        name="blue",
        type="vxlan",
        mtu=1450,
        segmentation_id=4242,
        subnets=(subnet(),),
        vxlan_peers=("192.0.2.2", "192.0.2.3"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def dhcp_port() -> Port:
    return Port(
        id=DHCP_PORT,
        network_id=NET,
        mac="fa:16:3e:00:00:02",
        fixed_ips=((SUBNET, "10.0.0.2"),),
        device_owner="network:dhcp",
    )


def vm_port(port_id: str = VM1, address: str = "10.0.0.10", **changes: object) -> Port:
    base = Port(
        id=port_id,
        network_id=NET,
        mac="fa:16:3e:00:00:" + address.rsplit(".", 1)[1].zfill(2)[-2:],
        fixed_ips=((SUBNET, address),),
        device_owner="compute",
        hostname=f"vm{address.rsplit('.', 1)[1]}",
        rules=(*ALL_EGRESS, SSH_FROM_SUBNET),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def host(*ports: Port, networks: tuple[Network, ...] | None = None) -> HostNetworks:
    return HostNetworks(
        networks=(network(),) if networks is None else networks,
        ports=ports or (dhcp_port(), vm_port(), vm_port(VM2, "10.0.0.11")),
    )
