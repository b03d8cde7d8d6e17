"""Networks and subnets through the API: the default network, provider rules, visibility across
projects, every subnet validation error, quotas."""

from __future__ import annotations

from typing import Any

import pytest

from nubes.controller.bootstrap import initialise
from tests.functional.helpers import error_of, make_project, make_user


def post(cloud: Any, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    return cloud.client.post(path, json=body, headers=headers)


def made(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return dict(response.json())


def failed(response: Any, status: int, code: str, *fragments: str) -> str:
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] == code, error
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    return str(error["message"])


def network(cloud: Any, headers: dict[str, str], name: str, **body: Any) -> dict[str, Any]:
    return made(post(cloud, "/v1/networks", {"name": name, **body}, headers))


def subnet(
    cloud: Any, headers: dict[str, str], name: str, net: str, cidr: str, **body: Any
) -> dict[str, Any]:
    return made(
        post(cloud, "/v1/subnets", {"name": name, "network_id": net, "cidr": cidr, **body}, headers)
    )


@pytest.fixture
def member(cloud: Any) -> dict[str, str]:
    make_project(cloud, cloud.admin, "p1")
    return make_user(cloud, cloud.admin, "u1", "p1")


# the default network ---------------------------------------------------------------------------


def test_bootstrap_makes_the_default_network_once(cloud, settings):
    admin = cloud.admin
    nets = cloud.client.get("/v1/networks", headers=admin).json()["networks"]
    assert [(n["name"], n["network_type"], n["segmentation_id"], n["mtu"]) for n in nets] == [
        ("default", "vxlan", 1, 1450)
    ]
    subnets = cloud.client.get("/v1/subnets", headers=admin).json()["subnets"]
    assert len(subnets) == 1
    default = subnets[0]
    assert (default["name"], default["cidr"], default["gateway_ip"]) == (
        "default-subnet",
        "10.42.0.0/24",
        "10.42.0.1",
    )
    assert default["allocation_pools"] == [{"start": "10.42.0.2", "end": "10.42.0.254"}]
    assert nets[0]["subnets"] == [default["id"]]
    initialise(settings, cloud.services.db)
    assert len(cloud.client.get("/v1/networks", headers=admin).json()["networks"]) == 1
    assert len(cloud.client.get("/v1/subnets", headers=admin).json()["subnets"]) == 1
    groups = cloud.client.get("/v1/security-groups", headers=admin).json()["security_groups"]
    assert [g["name"] for g in groups] == ["default"]
    usage = cloud.client.get("/v1/quotas/admin", headers=admin).json()["in_use"]
    assert (usage["networks"], usage["subnets"], usage["security_groups"]) == (1, 1, 1)
    assert usage["security_group_rules"] == 4


# networks ---------------------------------------------------------------------------------------


def test_member_networks_get_the_next_free_vni(cloud, member):
    first = network(cloud, member, "n1")
    second = network(cloud, member, "n2")
    assert (first["network_type"], first["mtu"], first["shared"]) == ("vxlan", 1450, False)
    assert (first["segmentation_id"], second["segmentation_id"]) == (2, 3)
    r = cloud.client.delete("/v1/networks/n1", headers=member)
    assert r.status_code == 204
    assert network(cloud, member, "n3")["segmentation_id"] == 2  # the freed VNI is reused
    r = cloud.client.patch("/v1/networks/n3", json={"name": "renamed"}, headers=member)
    assert r.status_code == 200
    assert (r.json()["name"], r.json()["generation"]) == ("renamed", 2)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"shared": True}, "shared"),
        ({"router_external": True}, "router_external"),
        ({"network_type": "flat", "physical_network": "physnet1"}, "network_type flat"),
        ({"segmentation_id": 77}, "segmentation_id"),
        ({"network_type": "vlan", "segmentation_id": 5, "physical_network": "p"}, "vlan"),
    ],
)
def test_provider_attributes_are_for_cloud_admins(cloud, member, body, fields):
    r = post(cloud, "/v1/networks", {"name": "x", **body}, member)
    failed(r, 403, "nubes.policy.forbidden", fields, "cloud admin")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"network_type": "vlan", "physical_network": "physnet1"}, "VLAN id"),
        ({"network_type": "vlan", "segmentation_id": 4095, "physical_network": "p"}, "1-4094"),
        ({"network_type": "vlan", "segmentation_id": 10}, "physical_network"),
        ({"network_type": "flat"}, "physical_network"),
        ({"network_type": "flat", "physical_network": "p", "segmentation_id": 3}, "has none"),
        ({"network_type": "vxlan", "physical_network": "p"}, "has none"),
        ({"network_type": "vxlan", "mtu": 1500}, "68-1450"),
        ({"network_type": "local", "mtu": 9000}, "68-1500"),
    ],
)
def test_bad_provider_combinations_are_400(cloud, body, fragment):
    r = post(cloud, "/v1/networks", {"name": "x", **body}, cloud.admin)
    failed(r, 400, "nubes.request.invalid", fragment)


def test_segments_are_unique_per_type_and_physical_network(cloud):
    admin = cloud.admin
    vlan = {"network_type": "vlan", "physical_network": "physnet1", "segmentation_id": 100}
    network(cloud, admin, "v100", **vlan)
    r = post(cloud, "/v1/networks", {"name": "again", **vlan}, admin)
    failed(r, 409, "nubes.network.segment_in_use", "segmentation id 100", "physnet1")
    network(cloud, admin, "v100b", **{**vlan, "physical_network": "physnet2"})
    network(cloud, admin, "flat1", network_type="flat", physical_network="physnet1")
    r = post(
        cloud,
        "/v1/networks",
        {"name": "flat2", "network_type": "flat", "physical_network": "physnet1"},
        admin,
    )
    failed(r, 409, "nubes.network.segment_in_use", "flat")
    r = post(cloud, "/v1/networks", {"name": "vx", "segmentation_id": 1}, admin)
    failed(r, 409, "nubes.network.segment_in_use", "segmentation id 1 ")  # the default's VNI


def test_vni_range_exhaustion_is_409(cloud, member):
    cloud.services.settings.vxlan_vni_min = 1
    cloud.services.settings.vxlan_vni_max = 2
    network(cloud, member, "n1")  # VNI 2 (the default network has 1)
    r = post(cloud, "/v1/networks", {"name": "n2"}, member)
    failed(r, 409, "nubes.network.segments_exhausted", "1-2")


def test_visibility_across_projects(cloud, member):
    admin = cloud.admin
    make_project(cloud, admin, "p2")
    other = make_user(cloud, admin, "u2", "p2")
    mine = network(cloud, member, "private")
    subnet(cloud, member, "private-subnet", "private", "10.1.0.0/24")
    shared = network(cloud, admin, "shared", shared=True)
    subnet(cloud, admin, "shared-subnet", "shared", "10.2.0.0/24")
    network(cloud, admin, "public", router_external=True)
    names = {n["name"] for n in cloud.client.get("/v1/networks", headers=other).json()["networks"]}
    assert names == {"shared", "public"}
    for path in (
        f"/v1/networks/{mine['id']}",
        "/v1/networks/private",
        "/v1/subnets/private-subnet",
    ):
        r = cloud.client.get(path, headers=other)
        assert r.status_code == 404, path
    assert cloud.client.delete(f"/v1/networks/{mine['id']}", headers=other).status_code == 404
    assert [
        s["name"] for s in cloud.client.get("/v1/subnets", headers=other).json()["subnets"]
    ] == ["shared-subnet"]
    # a shared network takes other projects' ports, not their subnets
    port = made(post(cloud, "/v1/ports", {"network_id": shared["id"]}, other))
    assert port["fixed_ips"][0]["ip_address"].startswith("10.2.0.")
    r = post(
        cloud, "/v1/subnets", {"name": "s", "network_id": "shared", "cidr": "10.3.0.0/24"}, other
    )
    failed(r, 403, "nubes.policy.forbidden")
    # an external network is seen by all, plugged into by routers and floating IPs only
    r = post(cloud, "/v1/ports", {"network_id": "public"}, other)
    failed(r, 403, "nubes.policy.forbidden", "external")
    # the owner cannot unshare while another project has a port on it
    r = cloud.client.patch("/v1/networks/shared", json={"shared": False}, headers=admin)
    failed(r, 409, "nubes.network.in_use", "other projects")
    # ports are private to their project
    assert cloud.client.get(f"/v1/ports/{port['id']}", headers=member).status_code == 404


def test_names_matching_several_networks_ask_for_the_id(cloud):
    admin = cloud.admin
    network(cloud, admin, "twin")
    network(cloud, admin, "twin")
    r = cloud.client.get("/v1/networks/twin", headers=admin)
    failed(r, 409, "nubes.network.ambiguous_name", "use the id")


def test_network_delete_refuses_ports_and_takes_subnets(cloud, member):
    network(cloud, member, "n1")
    subnet(cloud, member, "s1", "n1", "10.0.0.0/24")
    port = made(post(cloud, "/v1/ports", {"network_id": "n1"}, member))
    r = cloud.client.delete("/v1/networks/n1", headers=member)
    failed(r, 409, "nubes.network.in_use", "1 port(s)", port["id"])
    assert cloud.client.delete(f"/v1/ports/{port['id']}", headers=member).status_code == 204
    assert cloud.client.delete("/v1/networks/n1", headers=member).status_code == 204
    assert cloud.client.get("/v1/subnets/s1", headers=member).status_code == 404
    usage = cloud.client.get("/v1/quotas/p1", headers=member).json()["in_use"]
    assert (usage["networks"], usage["subnets"], usage["ports"]) == (0, 0, 0)


# subnets ---------------------------------------------------------------------------------------


def test_subnet_defaults_and_choices(cloud, member):
    network(cloud, member, "n1")
    plain = subnet(cloud, member, "plain", "n1", "10.0.0.0/28")
    assert plain["gateway_ip"] == "10.0.0.1"
    assert plain["allocation_pools"] == [{"start": "10.0.0.2", "end": "10.0.0.14"}]
    assert (plain["ip_version"], plain["enable_dhcp"]) == (4, True)
    none = subnet(cloud, member, "nogw", "n1", "10.0.1.0/29", gateway_ip=None, enable_dhcp=False)
    assert none["gateway_ip"] is None
    assert none["allocation_pools"] == [{"start": "10.0.1.1", "end": "10.0.1.6"}]
    middle = subnet(cloud, member, "mid", "n1", "10.0.2.0/29", gateway_ip="10.0.2.3")
    assert middle["allocation_pools"] == [
        {"start": "10.0.2.1", "end": "10.0.2.2"},
        {"start": "10.0.2.4", "end": "10.0.2.6"},
    ]
    chosen = subnet(
        cloud,
        member,
        "chosen",
        "n1",
        "10.0.3.0/24",
        allocation_pools=[{"start": "10.0.3.100", "end": "10.0.3.110"}],
        dns_nameservers=["192.0.2.53"],
        host_routes=[{"destination": "192.168.0.0/16", "nexthop": "10.0.3.254"}],
    )
    assert chosen["allocation_pools"] == [{"start": "10.0.3.100", "end": "10.0.3.110"}]
    assert chosen["dns_nameservers"] == ["192.0.2.53"]
    assert chosen["host_routes"] == [{"destination": "192.168.0.0/16", "nexthop": "10.0.3.254"}]
    v6 = subnet(cloud, member, "v6", "n1", "fd00:1::/64")
    assert (v6["ip_version"], v6["gateway_ip"]) == (6, "fd00:1::1")
    assert v6["allocation_pools"] == [{"start": "fd00:1::2", "end": "fd00:1::ffff:ffff:ffff:ffff"}]
    port = made(
        post(cloud, "/v1/ports", {"network_id": "n1", "fixed_ips": [{"subnet_id": "v6"}]}, member)
    )
    assert port["fixed_ips"][0]["ip_address"].startswith("fd00:1::")
    r = cloud.client.patch(
        "/v1/subnets/plain", json={"dns_nameservers": ["10.0.0.53"], "name": "p2"}, headers=member
    )
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["dns_nameservers"]) == ("p2", ["10.0.0.53"])
    r = cloud.client.patch("/v1/subnets/p2", json={"dns_nameservers": ["nope"]}, headers=member)
    failed(r, 400, "nubes.subnet.invalid", "dns_nameservers")


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ({"cidr": "10.0.0.1/24"}, ["host bits set", "did you mean 10.0.0.0/24?"]),
        ({"cidr": "10.0.0.0"}, ["not a CIDR"]),
        ({"cidr": "banana/24"}, ["not a CIDR"]),
        ({"cidr": "10.0.0.0/31"}, ["too small", "/30"]),
        ({"cidr": "fd00::/127"}, ["too small", "/126"]),
        ({"cidr": "10.0.0.0/24", "ip_version": 6}, ["ip_version is 6"]),
        ({"cidr": "10.0.0.0/24", "gateway_ip": "10.9.9.1"}, ["gateway_ip", "outside"]),
        ({"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.255"}, ["broadcast"]),
        ({"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.0"}, ["network address"]),
        ({"cidr": "10.0.0.0/24", "gateway_ip": "x"}, ["gateway_ip", "not an IP"]),
        (
            {"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.1", "end": "10.0.0.9"}]},
            ["gateway_ip 10.0.0.1 is inside allocation pool 10.0.0.1-10.0.0.9"],
        ),
        (
            {"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.5", "end": "10.0.1.9"}]},
            ["allocation_pools", "10.0.1.9 is outside the subnet"],
        ),
        (
            {"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.9", "end": "10.0.0.5"}]},
            ["starts after it ends"],
        ),
        (
            {
                "cidr": "10.0.0.0/24",
                "allocation_pools": [
                    {"start": "10.0.0.10", "end": "10.0.0.20"},
                    {"start": "10.0.0.20", "end": "10.0.0.30"},
                ],
            },
            ["pools 10.0.0.10-10.0.0.20 and 10.0.0.20-10.0.0.30 overlap"],
        ),
        ({"cidr": "10.0.0.0/24", "dns_nameservers": ["fd00::53"]}, ["not an IPv4"]),
        (
            {
                "cidr": "10.0.0.0/24",
                "host_routes": [{"destination": "0.0.0.0/0", "nexthop": "1.1.1.1"}],
            },
            ["next hop 1.1.1.1", "outside"],
        ),
        (
            {
                "cidr": "10.0.0.0/24",
                "host_routes": [{"destination": "1.2.3.4/8", "nexthop": "10.0.0.9"}],
            },
            ["did you mean 1.0.0.0/8?"],
        ),
    ],
)
def test_subnet_errors_name_what_is_wrong(cloud, member, body, fragments):
    network(cloud, member, "n1")
    r = post(cloud, "/v1/subnets", {"name": "s", "network_id": "n1", **body}, member)
    failed(r, 400, "nubes.subnet.invalid", *fragments)


def test_overlapping_subnets_on_one_network_are_409(cloud, member):
    network(cloud, member, "n1")
    network(cloud, member, "n2")
    first = subnet(cloud, member, "first", "n1", "10.0.0.0/24")
    r = post(
        cloud, "/v1/subnets", {"name": "s", "network_id": "n1", "cidr": "10.0.0.128/25"}, member
    )
    failed(r, 409, "nubes.subnet.overlap", "10.0.0.0/24", "first", first["id"])
    subnet(cloud, member, "elsewhere", "n2", "10.0.0.0/24")  # other networks may overlap


def test_ipv6_needs_an_mtu_of_1280(cloud):
    network(cloud, cloud.admin, "small", network_type="local", mtu=1000)
    r = post(
        cloud, "/v1/subnets", {"name": "s", "network_id": "small", "cidr": "fd00::/64"}, cloud.admin
    )
    failed(r, 400, "nubes.subnet.invalid", "1280")


# quotas ----------------------------------------------------------------------------------------


def test_network_quotas_are_charged_and_released(cloud, member):
    limits = {"networks": 1, "subnets": 1, "ports": 1, "routers": 1, "security_groups": 2}
    r = cloud.client.patch("/v1/quotas/p1", json={"limits": limits}, headers=cloud.admin)
    assert r.status_code == 200, r.text
    network(cloud, member, "n1")
    failed(
        post(cloud, "/v1/networks", {"name": "n2"}, member), 403, "nubes.quota.exceeded", "networks"
    )
    subnet(cloud, member, "s1", "n1", "10.0.0.0/24")
    r = post(
        cloud, "/v1/subnets", {"name": "s2", "network_id": "n1", "cidr": "10.0.1.0/24"}, member
    )
    failed(r, 403, "nubes.quota.exceeded", "subnets")
    made(post(cloud, "/v1/ports", {"network_id": "n1"}, member))  # makes the default group
    failed(
        post(cloud, "/v1/ports", {"network_id": "n1"}, member), 403, "nubes.quota.exceeded", "ports"
    )
    made(post(cloud, "/v1/security-groups", {"name": "web"}, member))
    r = post(cloud, "/v1/security-groups", {"name": "db"}, member)
    failed(r, 403, "nubes.quota.exceeded", "security_groups")
    made(post(cloud, "/v1/routers", {"name": "r1"}, member))
    failed(
        post(cloud, "/v1/routers", {"name": "r2"}, member), 403, "nubes.quota.exceeded", "routers"
    )
    usage = cloud.client.get("/v1/quotas/p1", headers=member).json()["in_use"]
    assert {k: usage[k] for k in limits} == dict.fromkeys(limits, 1) | {"security_groups": 2}
    assert usage["security_group_rules"] == 4
    # a refused create changed nothing
    assert len(cloud.client.get("/v1/networks", headers=member).json()["networks"]) == 1


def test_a_project_with_networks_is_not_deleted_and_its_default_group_goes_with_it(cloud):
    """Networks name their project without a foreign key (as Neutron's): deleting the project
    is still refused while it has some, and the default security group nubes made for it
    (which cannot be deleted on its own) goes with the project."""
    from sqlalchemy import func, select

    from nubes.store.models import SecurityGroup

    admin = cloud.admin
    project = make_project(cloud, admin, "gone")
    owner = make_user(cloud, admin, "gone-member", "gone")
    net = made(post(cloud, "/v1/networks", {"name": "n"}, owner))
    made(
        post(
            cloud,
            "/v1/subnets",
            {"name": "s", "network_id": net["id"], "cidr": "10.9.0.0/24"},
            owner,
        )
    )
    port = made(post(cloud, "/v1/ports", {"name": "p", "network_id": net["id"]}, owner))
    r = cloud.client.delete("/v1/projects/gone", headers=admin)
    assert r.status_code == 409
    assert "1 networks, 1 ports" in error_of(r)["message"]
    assert cloud.client.delete(f"/v1/ports/{port['id']}", headers=owner).status_code == 204
    assert cloud.client.delete(f"/v1/networks/{net['id']}", headers=owner).status_code == 204

    def groups() -> int:
        with cloud.services.db.read() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(SecurityGroup)
                    .where(SecurityGroup.project_id == project["id"])
                )
                or 0
            )

    assert groups() == 1  # the default one, made for the port
    r = cloud.client.delete("/v1/projects/gone", headers=admin)
    assert r.status_code == 204, r.text
    assert groups() == 0
