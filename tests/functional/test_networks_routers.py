"""Routers and floating IPs through the API: interfaces take the gateway address, gateways need
an external network, and a floating IP needs a router between its port and its network."""

from __future__ import annotations

from typing import Any

import pytest

from tests.functional.helpers import make_project, make_user
from tests.functional.test_networks import failed, made, network, post, subnet


@pytest.fixture
def member(cloud: Any) -> dict[str, str]:
    make_project(cloud, cloud.admin, "p1")
    return make_user(cloud, cloud.admin, "u1", "p1")


@pytest.fixture
def public(cloud: Any) -> dict[str, Any]:
    """The external network (admin-made), with a documentation range."""
    net = network(
        cloud, cloud.admin, "public", network_type="flat", physical_network="ext",
        router_external=True,
    )  # fmt: skip
    subnet(cloud, cloud.admin, "public-subnet", "public", "203.0.113.0/24", enable_dhcp=False)
    return net


@pytest.fixture
def inside(cloud: Any, member: dict[str, str]) -> dict[str, Any]:
    network(cloud, member, "inside")
    return subnet(cloud, member, "inside-subnet", "inside", "10.0.0.0/24")


def router(cloud: Any, headers: dict[str, str], name: str = "r1", **body: Any) -> dict[str, Any]:
    return made(post(cloud, "/v1/routers", {"name": name, **body}, headers))


def add(cloud: Any, headers: dict[str, str], subnet_ref: str, router_ref: str = "r1") -> Any:
    return post(cloud, f"/v1/routers/{router_ref}/interfaces", {"subnet_id": subnet_ref}, headers)


def test_interfaces(cloud, member, inside):
    router(cloud, member)
    r = add(cloud, member, "inside-subnet")
    assert r.status_code == 200, r.text
    [interface] = r.json()["interfaces"]
    assert (interface["subnet_id"], interface["ip_address"]) == (inside["id"], "10.0.0.1")
    port = cloud.client.get(f"/v1/ports/{interface['port_id']}", headers=member).json()
    assert (port["device_owner"], port["device_id"]) == ("network:router_interface", r.json()["id"])
    failed(
        add(cloud, member, "inside-subnet"), 409, "nubes.router.interface_invalid", "already has"
    )
    network(cloud, member, "other")
    subnet(cloud, member, "overlapping", "other", "10.0.0.0/16")
    failed(add(cloud, member, "overlapping"), 409, "nubes.subnet.overlap", "10.0.0.0/24")
    subnet(cloud, member, "gatewayless", "other", "10.9.0.0/24", gateway_ip=None)
    failed(
        add(cloud, member, "gatewayless"), 409, "nubes.router.interface_invalid", "no gateway_ip"
    )
    # the router's port holds the gateway address: nobody else gets it
    r = post(cloud, "/v1/routers", {"name": "r2"}, member)
    assert r.status_code == 201
    failed(
        add(cloud, member, "inside-subnet", "r2"),
        409,
        "nubes.subnet.address_in_use",
        interface["port_id"],
    )
    # ... and its port cannot be deleted directly, nor the subnet, nor the router
    r = cloud.client.delete(f"/v1/ports/{interface['port_id']}", headers=member)
    failed(r, 409, "nubes.port.in_use", "remove-subnet")
    failed(
        cloud.client.delete("/v1/subnets/inside-subnet", headers=member),
        409,
        "nubes.subnet.in_use",
        "router interface",
    )
    failed(
        cloud.client.delete("/v1/routers/r1", headers=member),
        409,
        "nubes.router.in_use",
        "1 interface",
    )
    r = cloud.client.delete("/v1/routers/r1/interfaces/inside-subnet", headers=member)
    assert r.status_code == 200, r.text
    assert r.json()["interfaces"] == []
    r = cloud.client.delete("/v1/routers/r1/interfaces/inside-subnet", headers=member)
    failed(r, 404, "nubes.router.interface_not_found")
    assert cloud.client.delete("/v1/routers/r1", headers=member).status_code == 204
    assert cloud.client.get("/v1/quotas/p1", headers=member).json()["in_use"]["routers"] == 1


def test_gateway_needs_an_external_network(cloud, member, inside, public):
    router(cloud, member)
    r = cloud.client.put("/v1/routers/r1/gateway", json={"network_id": "inside"}, headers=member)
    failed(r, 400, "nubes.router.gateway_invalid", "not external")
    network(cloud, cloud.admin, "bare", router_external=True)
    r = cloud.client.put("/v1/routers/r1/gateway", json={"network_id": "bare"}, headers=member)
    failed(r, 409, "nubes.router.gateway_invalid", "no subnet")
    r = cloud.client.put(
        "/v1/routers/r1/gateway",
        json={"network_id": "public", "enable_snat": False},
        headers=member,
    )
    assert r.status_code == 200, r.text
    gateway = r.json()["external_gateway_info"]
    assert (gateway["network_id"], gateway["enable_snat"]) == (public["id"], False)
    [fixed] = gateway["external_fixed_ips"]
    assert fixed["ip_address"].startswith("203.0.113.")
    r = cloud.client.delete("/v1/routers/r1/gateway", headers=member)
    assert r.json()["external_gateway_info"] is None
    made(
        post(
            cloud,
            "/v1/routers",
            {"name": "r2", "external_gateway_info": {"network_id": "public"}},
            member,
        )
    )
    # deleting a router takes its gateway port (and its address) with it
    assert cloud.client.delete("/v1/routers/r2", headers=member).status_code == 204
    ports = cloud.client.get("/v1/ports", params={"network_id": "public"}, headers=cloud.admin)
    assert ports.json()["ports"] == []


def test_floating_ips(cloud, member, inside, public):
    server = made(post(cloud, "/v1/ports", {"network_id": "inside", "name": "server"}, member))
    fip = made(post(cloud, "/v1/floating-ips", {"floating_network_id": "public"}, member))
    assert fip["floating_ip_address"].startswith("203.0.113.")
    assert (fip["port_id"], fip["status"]) == (None, "DOWN")
    r = post(cloud, "/v1/floating-ips", {"floating_network_id": "inside"}, member)
    failed(r, 400, "nubes.router.gateway_invalid", "not external")
    r = post(
        cloud,
        "/v1/floating-ips",
        {"floating_network_id": "public", "floating_ip_address": "203.0.113.9"},
        member,
    )
    failed(r, 403, "nubes.policy.forbidden", "cloud admin")
    associate = f"/v1/floating-ips/{fip['id']}/association"
    # no router yet
    r = cloud.client.put(associate, json={"port_id": "server"}, headers=member)
    failed(r, 409, "nubes.floating_ip.unreachable", "inside-subnet", "public", "router add-subnet")
    router(cloud, member)
    add(cloud, member, "inside-subnet")
    # an interface but no gateway on the floating IP's network
    r = cloud.client.put(associate, json={"port_id": "server"}, headers=member)
    failed(r, 409, "nubes.floating_ip.unreachable")
    cloud.client.put("/v1/routers/r1/gateway", json={"network_id": "public"}, headers=member)
    r = cloud.client.put(
        associate, json={"port_id": "server", "fixed_ip_address": "10.9.9.9"}, headers=member
    )
    failed(r, 400, "nubes.request.invalid", "not an address of port")
    r = cloud.client.put(associate, json={"port_id": "server"}, headers=member)
    assert r.status_code == 200, r.text
    body = r.json()
    router_id = cloud.client.get("/v1/routers/r1", headers=member).json()["id"]
    assert (body["port_id"], body["router_id"], body["status"]) == (
        server["id"],
        router_id,
        "ACTIVE",
    )
    assert body["fixed_ip_address"] == server["fixed_ips"][0]["ip_address"]
    # one floating IP per fixed address
    second = made(post(cloud, "/v1/floating-ips", {"floating_network_id": "public"}, member))
    r = cloud.client.put(
        f"/v1/floating-ips/{second['id']}/association", json={"port_id": "server"}, headers=member
    )
    failed(r, 409, "nubes.floating_ip.in_use", fip["floating_ip_address"])
    # the router's gateway and interface are needed while it is associated
    failed(
        cloud.client.delete("/v1/routers/r1/gateway", headers=member),
        409,
        "nubes.router.in_use",
        "floating IP",
    )
    failed(
        cloud.client.delete("/v1/routers/r1/interfaces/inside-subnet", headers=member),
        409,
        "nubes.router.in_use",
        fip["floating_ip_address"],
    )
    # found by address too; unset, then everything goes
    assert (
        cloud.client.get(
            f"/v1/floating-ips/{fip['floating_ip_address']}", headers=member
        ).status_code
        == 200
    )
    r = cloud.client.delete(associate, headers=member)
    assert (r.json()["port_id"], r.json()["status"]) == (None, "DOWN")
    assert (
        cloud.client.delete("/v1/routers/r1/interfaces/inside-subnet", headers=member).status_code
        == 200
    )
    for ref in (fip["id"], second["id"]):
        assert cloud.client.delete(f"/v1/floating-ips/{ref}", headers=member).status_code == 204
    assert cloud.client.get("/v1/quotas/p1", headers=member).json()["in_use"]["floating_ips"] == 0


def test_deleting_an_associated_port_disassociates_its_floating_ip(cloud, member, inside, public):
    server = made(post(cloud, "/v1/ports", {"network_id": "inside"}, member))
    router(cloud, member, external_gateway_info={"network_id": "public"})
    add(cloud, member, "inside-subnet")
    fip = made(
        post(
            cloud,
            "/v1/floating-ips",
            {"floating_network_id": "public", "port_id": server["id"]},
            member,
        )
    )
    assert fip["port_id"] == server["id"]
    assert cloud.client.delete(f"/v1/ports/{server['id']}", headers=member).status_code == 204
    after = cloud.client.get(f"/v1/floating-ips/{fip['id']}", headers=member).json()
    assert (after["port_id"], after["fixed_ip_address"], after["router_id"]) == (None, None, None)


def test_routers_are_placed_on_the_head_nodes_agent(cloud, member, inside):
    from tests.functional.test_networks_hosts import add_host

    router(cloud, member, "early")  # no host up yet
    add_host(cloud, "node-2", "192.0.2.12")
    add_host(cloud, "node-1", "127.0.0.1")
    add_host(cloud, "down", "127.0.0.2", state="error")
    late = router(cloud, member, "late")
    hosts = {
        h["name"]: h["id"]
        for h in cloud.client.get("/v1/hosts", headers=cloud.admin).json()["hosts"]
    }
    shown = cloud.client.get(f"/v1/routers/{late['id']}", headers=cloud.admin).json()
    assert shown["host_id"] == hosts["node-1"]
    assert cloud.client.get(f"/v1/routers/{late['id']}", headers=member).json()["host_id"] is None
    early = cloud.client.get("/v1/routers/early", headers=cloud.admin).json()
    assert early["host_id"] is None
    r = add(cloud, member, "inside-subnet", "early")  # placed now, with its port
    assert r.status_code == 200, r.text
    assert (
        cloud.client.get("/v1/routers/early", headers=cloud.admin).json()["host_id"]
        == hosts["node-1"]
    )
    port_id = r.json()["interfaces"][0]["port_id"]
    assert (
        cloud.client.get(f"/v1/ports/{port_id}", headers=cloud.admin).json()["binding_host_id"]
        == hosts["node-1"]
    )
