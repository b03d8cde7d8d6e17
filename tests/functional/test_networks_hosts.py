"""What compute calls (allocate, bind, release, instance_nics) and what one host's networking
must be (host_networks), on a small topology of two hosts: a vxlan network with an instance on
each host, an external network, a router on the head node with a floating IP."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from nubes.domain import netdesired
from nubes.domain.context import RequestContext
from nubes.domain.errors import Conflict, InvalidInput, NotFound
from nubes.network import (
    NicRequest,
    allocate_instance_ports,
    bind_instance_ports,
    host_networks,
    instance_nics,
    release_instance_ports,
    report_ports,
)
from nubes.store.models import Host, Port, new_id
from tests.functional.helpers import make_project, make_user, statements_of_this_thread
from tests.functional.test_networks import made, network, post, subnet

METADATA = "http://127.0.0.1:8770"


def add_host(cloud: Any, name: str, address: str, state: str = "monitored") -> str:
    """A host row as the join API leaves it (no agent is needed to compute its desire)."""
    host_id = new_id()
    with cloud.services.db.transaction() as session:
        session.add(
            Host(
                id=host_id,
                name=name,
                address=address,
                driver="fake",
                credential_hash="x",
                state=state,
            )
        )
    return host_id


@dataclass
class Topology:
    cloud: Any
    ctx: RequestContext
    member: dict[str, str]
    head: str
    other: str

    def boot(self, host: str, *nics: NicRequest, name: str = "vm") -> str:
        """What instance create does: ports in its transaction, then bound to its host."""
        instance_id = str(uuid.uuid4())
        with self.cloud.services.db.transaction() as session:
            allocate_instance_ports(session, self.ctx, instance_id, name, list(nics))
            bind_instance_ports(session, instance_id, host)
        return instance_id

    def delete(self, instance_id: str) -> None:
        with self.cloud.services.db.transaction() as session:
            release_instance_ports(session, instance_id)

    def desired(self, host: str) -> netdesired.HostNetworks:
        with self.cloud.services.db.read() as session:
            return host_networks(session, host, METADATA)

    def nics(self, instance_id: str) -> list[Any]:
        with self.cloud.services.db.read() as session:
            return instance_nics(session, instance_id)


@pytest.fixture
def topo(cloud: Any) -> Topology:
    make_project(cloud, cloud.admin, "p1")
    member = make_user(cloud, cloud.admin, "u1", "p1")
    ctx = cloud.services.auth.validate(member["X-Auth-Token"])
    head = add_host(cloud, "node-1", "127.0.0.1")
    other = add_host(cloud, "node-2", "192.0.2.12")
    network(cloud, member, "net")
    subnet(cloud, member, "net-subnet", "net", "10.0.0.0/24", dns_nameservers=["10.0.0.53"])
    network(
        cloud, cloud.admin, "public", network_type="flat", physical_network="ext",
        router_external=True,
    )  # fmt: skip
    subnet(cloud, cloud.admin, "public-subnet", "public", "203.0.113.0/24", enable_dhcp=False)
    return Topology(cloud, ctx, member, head, other)


def by_owner(desired: netdesired.HostNetworks) -> dict[str, list[netdesired.Port]]:
    result: dict[str, list[netdesired.Port]] = {}
    for port in desired.ports:
        result.setdefault(port.device_owner, []).append(port)
    return result


def test_two_hosts_one_network_a_router_and_a_floating_ip(topo):
    cloud, member = topo.cloud, topo.member
    vm_a = topo.boot(topo.head, NicRequest(network="net"), name="vm-a")
    vm_b = topo.boot(topo.other, NicRequest(network="net"), name="vm-b")
    made(
        post(
            cloud,
            "/v1/routers",
            {"name": "r1", "external_gateway_info": {"network_id": "public"}},
            member,
        )
    )
    post(cloud, "/v1/routers/r1/interfaces", {"subnet_id": "net-subnet"}, member)
    [nic_a] = topo.nics(vm_a)
    [nic_b] = topo.nics(vm_b)
    fip = made(
        post(
            cloud,
            "/v1/floating-ips",
            {"floating_network_id": "public", "port_id": nic_a.id},
            member,
        )
    )

    head = topo.desired(topo.head)
    assert head.metadata_url == METADATA
    nets = {n.name: n for n in head.networks}
    assert set(nets) == {"net", "public"}
    assert (nets["net"].type, nets["net"].mtu, nets["net"].segmentation_id) == ("vxlan", 1450, 2)
    assert nets["net"].vxlan_peers == ("192.0.2.12",)
    assert (nets["public"].type, nets["public"].physical_network, nets["public"].external) == (
        "flat", "ext", True,
    )  # fmt: skip
    assert nets["net"].subnets[0].dns_nameservers == ("10.0.0.53",)
    owners = by_owner(head)
    assert sorted(owners) == [
        "compute", "network:dhcp", "network:router_gateway", "network:router_interface",
    ]  # fmt: skip
    [compute] = owners["compute"]
    assert (compute.id, compute.mac, compute.hostname) == (nic_a.id, nic_a.mac, "vm-a")
    assert compute.fixed_ips == nic_a.fixed_ips
    [dhcp] = owners["network:dhcp"]
    assert (dhcp.device_id, dhcp.port_security, dhcp.rules) == (topo.head, False, ())
    # the default group: all egress, ingress from its members (both instances, as /32)
    members = tuple(sorted(f"{nic.fixed_ips[0][1]}/32" for nic in (nic_a, nic_b)))
    assert netdesired.Rule(direction="ingress", ethertype="IPv4", remote=members) in compute.rules
    assert netdesired.Rule(direction="egress", ethertype="IPv4") in compute.rules
    assert netdesired.Rule(direction="ingress", ethertype="IPv6", remote=()) in compute.rules
    [router] = head.routers
    assert (router.gateway_address or "").startswith("203.0.113.")
    assert (router.gateway_prefixlen, router.external_gateway_ip, router.snat) == (
        24,
        "203.0.113.1",
        True,
    )
    [interface] = router.interfaces
    assert (interface.address, interface.prefixlen) == ("10.0.0.1", 24)
    assert router.floating_ips == (
        netdesired.FloatingIp(
            fip["id"], fip["floating_ip_address"], nic_a.fixed_ips[0][1], nic_a.id
        ),
    )
    assert netdesired.from_json(netdesired.to_json(head)) == head

    other = topo.desired(topo.other)
    assert [n.name for n in other.networks] == ["net"]
    assert other.networks[0].vxlan_peers == ("127.0.0.1",)
    assert sorted(by_owner(other)) == ["compute", "network:dhcp"]
    assert other.routers == ()

    # the agent reports what it wired
    with cloud.services.db.transaction() as session:
        assert report_ports(session, topo.other, [nic_b.id]) == 1
    assert cloud.client.get(f"/v1/ports/{nic_b.id}", headers=member).json()["status"] == "ACTIVE"

    # vm-b goes: its port and node-2's DHCP port go, node-1 floods to nobody
    topo.delete(vm_b)
    assert topo.desired(topo.other) == netdesired.HostNetworks(metadata_url=METADATA)
    assert {n.name: n.vxlan_peers for n in topo.desired(topo.head).networks}["net"] == ()
    assert cloud.client.get(f"/v1/ports/{nic_b.id}", headers=member).status_code == 404
    # a port that held a floating IP goes with its instance, the floating IP stays unmapped
    topo.delete(vm_a)
    after = cloud.client.get(f"/v1/floating-ips/{fip['id']}", headers=member).json()
    assert after["port_id"] is None
    assert "network:dhcp" not in by_owner(topo.desired(topo.head))
    assert cloud.client.get("/v1/quotas/p1", headers=member).json()["in_use"]["ports"] == 0


def test_nics_in_order_with_fixed_ips_and_claimed_ports(topo):
    cloud, member = topo.cloud, topo.member
    network(cloud, member, "second")
    subnet(cloud, member, "second-subnet", "second", "10.1.0.0/24", gateway_ip=None)
    claimed = made(post(cloud, "/v1/ports", {"network_id": "second", "name": "mine"}, member))
    vm = topo.boot(
        topo.head,
        NicRequest(network="net", fixed_ip="10.0.0.50"),
        NicRequest(port="mine"),
    )
    nics = topo.nics(vm)
    assert [n.id for n in nics][1] == claimed["id"]
    assert nics[0].fixed_ips[0][1] == "10.0.0.50"
    assert (nics[0].mtu, nics[0].subnets[0].cidr, nics[0].subnets[0].gateway_ip) == (
        1450, "10.0.0.0/24", "10.0.0.1",
    )  # fmt: skip
    assert nics[1].subnets[0].gateway_ip is None
    assert nics[0].to_json()["tap"] == netdesired.tap_name(nics[0].id)
    shown = cloud.client.get(f"/v1/ports/{claimed['id']}", headers=cloud.admin).json()
    assert (shown["device_owner"], shown["device_id"], shown["binding_host_id"]) == (
        "compute", vm, topo.head,
    )  # fmt: skip
    # a bound port cannot be claimed twice, nor deleted under its instance
    with pytest.raises(Conflict, match="in use by compute"):
        topo.boot(topo.other, NicRequest(port="mine"))
    r = cloud.client.delete(f"/v1/ports/{claimed['id']}", headers=member)
    assert r.status_code == 409
    topo.delete(vm)
    # the claimed port survives, unbound; the made one is gone
    kept = cloud.client.get(f"/v1/ports/{claimed['id']}", headers=cloud.admin).json()
    assert (kept["device_id"], kept["binding_host_id"], kept["device_owner"]) == ("", None, "")
    assert cloud.client.get(f"/v1/ports/{nics[0].id}", headers=member).status_code == 404
    assert cloud.client.get("/v1/quotas/p1", headers=member).json()["in_use"]["ports"] == 1


def test_nic_errors_roll_back_everything(topo):
    cloud, member = topo.cloud, topo.member
    with pytest.raises(InvalidInput, match=r"10\.0\.0\.1 is the gateway"):
        topo.boot(
            topo.head, NicRequest(network="net"), NicRequest(network="net", fixed_ip="10.0.0.1")
        )
    with pytest.raises(NotFound):
        topo.boot(topo.head, NicRequest(network="nope"))
    with pytest.raises(InvalidInput, match="not both"):
        topo.boot(topo.head, NicRequest(network="net", port="x"))
    make_project(cloud, cloud.admin, "p2")
    other = make_user(cloud, cloud.admin, "u2", "p2")
    theirs = made(post(cloud, "/v1/ports", {"network_id": "public"}, cloud.admin))
    with pytest.raises(NotFound):
        topo.boot(topo.head, NicRequest(port=theirs["id"]))
    assert other
    with cloud.services.db.read() as session:
        assert session.scalars(select(Port).where(Port.device_owner == "compute")).all() == []
    assert cloud.client.get("/v1/quotas/p1", headers=member).json()["in_use"]["ports"] == 0


def test_the_default_nic_is_the_projects_only_network(topo):
    vm = topo.boot(topo.head, NicRequest())
    [nic] = topo.nics(vm)
    net = topo.cloud.client.get("/v1/networks/net", headers=topo.member).json()
    assert nic.network_id == net["id"]
    network(topo.cloud, topo.member, "second")
    with pytest.raises(InvalidInput, match="several networks"):
        topo.boot(topo.head, NicRequest())


def test_dhcp_follows_subnets(topo):
    cloud, member = topo.cloud, topo.member
    topo.boot(topo.head, NicRequest(network="net"))
    [dhcp] = by_owner(topo.desired(topo.head))["network:dhcp"]
    assert len(dhcp.fixed_ips) == 1
    subnet(cloud, member, "more", "net", "10.5.0.0/24")
    [dhcp] = by_owner(topo.desired(topo.head))["network:dhcp"]
    assert len(dhcp.fixed_ips) == 2  # an address on the new DHCP subnet too
    cloud.client.patch("/v1/subnets/more", json={"enable_dhcp": False}, headers=member)
    [dhcp] = by_owner(topo.desired(topo.head))["network:dhcp"]
    assert [s for s, _ in dhcp.fixed_ips] == [
        cloud.client.get("/v1/subnets/net-subnet", headers=member).json()["id"]
    ]
    cloud.client.patch("/v1/subnets/net-subnet", json={"enable_dhcp": False}, headers=member)
    assert "network:dhcp" not in by_owner(topo.desired(topo.head))


def test_host_networks_costs_the_same_few_queries_for_100_ports(topo):
    cloud = topo.cloud
    cloud.client.patch("/v1/quotas/p1", json={"limits": {"ports": -1}}, headers=cloud.admin)
    topo.boot(topo.head, NicRequest(network="net"))
    with statements_of_this_thread(cloud.services.db.engine, "SELECT") as few:
        topo.desired(topo.head)
    for _ in range(99):
        topo.boot(topo.head, NicRequest(network="net"))
    with statements_of_this_thread(cloud.services.db.engine, "SELECT") as many:
        desired = topo.desired(topo.head)
    assert len(by_owner(desired)["compute"]) == 100
    assert len(many) == len(few) <= 12, many
