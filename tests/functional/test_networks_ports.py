"""Ports, IPAM and security groups through the API: addresses asked for or handed out, in use,
outside, exhausted and cooling down; MACs; the default group and its rules; rule validation."""

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
def tiny(cloud: Any, member: dict[str, str]) -> dict[str, Any]:
    """A network with a /29: five addresses, .2 to .6."""
    network(cloud, member, "n1")
    return subnet(cloud, member, "tiny", "n1", "10.0.0.0/29")


def port(cloud: Any, headers: dict[str, str], **body: Any) -> Any:
    return post(cloud, "/v1/ports", {"network_id": "n1", **body}, headers)


def address(response: Any) -> str:
    return str(made(response)["fixed_ips"][0]["ip_address"])


# addresses ------------------------------------------------------------------------------------


def test_ports_get_a_mac_an_address_and_the_default_group(cloud, member, tiny):
    created = made(port(cloud, member, name="web"))
    assert created["mac_address"].startswith("fa:16:3e:")
    assert len(created["mac_address"]) == 17
    assert created["fixed_ips"][0]["subnet_id"] == tiny["id"]
    assert created["fixed_ips"][0]["ip_address"] in {f"10.0.0.{i}" for i in range(2, 7)}
    assert (created["status"], created["port_security_enabled"]) == ("DOWN", True)
    groups = cloud.client.get("/v1/security-groups", headers=member).json()["security_groups"]
    assert [g["name"] for g in groups] == ["default"]
    assert created["security_groups"] == [groups[0]["id"]]
    rules = {
        (r["direction"], r["ethertype"], r["remote_group_id"])
        for r in groups[0]["security_group_rules"]
    }
    assert rules == {
        ("egress", "IPv4", None),
        ("egress", "IPv6", None),
        ("ingress", "IPv4", groups[0]["id"]),
        ("ingress", "IPv6", groups[0]["id"]),
    }
    assert all(r["protocol"] is None for r in groups[0]["security_group_rules"])
    assert cloud.client.get("/v1/ports/web", headers=member).json()["id"] == created["id"]
    listed = cloud.client.get("/v1/ports", params={"network_id": "n1"}, headers=member).json()
    assert [p["id"] for p in listed["ports"]] == [created["id"]]
    made(port(cloud, member, name="second"))
    groups = cloud.client.get("/v1/security-groups", headers=member).json()["security_groups"]
    assert len(groups) == 1  # made once


def test_requested_addresses(cloud, member, tiny):
    assert address(port(cloud, member, fixed_ips=[{"ip_address": "10.0.0.5"}])) == "10.0.0.5"
    holder = cloud.client.get("/v1/ports", headers=member).json()["ports"][0]["id"]
    r = port(cloud, member, fixed_ips=[{"subnet_id": "tiny", "ip_address": "10.0.0.5"}])
    failed(r, 409, "nubes.subnet.address_in_use", "10.0.0.5", holder)
    r = port(cloud, member, fixed_ips=[{"subnet_id": "tiny", "ip_address": "10.0.1.5"}])
    failed(r, 400, "nubes.subnet.address_invalid", "10.0.1.5 is not in subnet tiny")
    r = port(cloud, member, fixed_ips=[{"ip_address": "10.9.9.9"}])
    failed(r, 400, "nubes.subnet.address_invalid", "10.9.9.9 is in no subnet")
    r = port(cloud, member, fixed_ips=[{"ip_address": "10.0.0.1"}])
    failed(r, 400, "nubes.subnet.address_invalid", "gateway address")
    r = port(cloud, member, fixed_ips=[{"ip_address": "10.0.0.7"}])
    failed(r, 400, "nubes.subnet.address_invalid", "broadcast")
    r = port(cloud, member, fixed_ips=[{"ip_address": "ten"}])
    failed(r, 400, "nubes.subnet.address_invalid", "not an IP address")
    r = port(cloud, member, fixed_ips=[{"subnet_id": "nope"}])
    failed(r, 404, "nubes.subnet.not_found", "nope")
    assert made(port(cloud, member, fixed_ips=[]))["fixed_ips"] == []
    # failures left nothing behind: one port with an address, one without
    assert len(cloud.client.get("/v1/ports", headers=member).json()["ports"]) == 2
    assert cloud.client.get("/v1/quotas/p1", headers=member).json()["in_use"]["ports"] == 2


def test_exhaustion_and_cool_down(cloud, member, tiny):
    ports = [made(port(cloud, member)) for _ in range(5)]
    handed = sorted(p["fixed_ips"][0]["ip_address"] for p in ports)
    assert handed == [f"10.0.0.{i}" for i in range(2, 7)]
    failed(
        port(cloud, member),
        409,
        "nubes.subnet.exhausted",
        "subnet tiny has no free addresses (5 of 5 in use)",
    )
    released = ports[0]["fixed_ips"][0]["ip_address"]
    assert cloud.client.delete(f"/v1/ports/{ports[0]['id']}", headers=member).status_code == 204
    # the released address is cooling down: not handed out
    failed(
        port(cloud, member), 409, "nubes.subnet.exhausted", "(5 of 5 in use, 1 of them cooling down"
    )
    # ... unless asked for by value
    assert address(port(cloud, member, fixed_ips=[{"ip_address": released}])) == released


def test_without_cool_down_an_address_is_reused_at_once(cloud, member, tiny):
    cloud.services.settings.ip_cooldown_seconds = 0
    ports = [made(port(cloud, member)) for _ in range(5)]
    released = ports[2]["fixed_ips"][0]["ip_address"]
    cloud.client.delete(f"/v1/ports/{ports[2]['id']}", headers=member)
    assert address(port(cloud, member)) == released


def test_cool_down_ends(cloud, member, tiny):
    from sqlalchemy import update

    from nubes.store.models import IpAllocation, utcnow

    ports = [made(port(cloud, member)) for _ in range(5)]
    cloud.client.delete(f"/v1/ports/{ports[1]['id']}", headers=member)
    with cloud.services.db.transaction() as session:
        session.execute(update(IpAllocation).values(cooling_until=utcnow()))
    assert address(port(cloud, member)) == ports[1]["fixed_ips"][0]["ip_address"]


def test_macs(cloud, member, tiny):
    given = made(port(cloud, member, mac_address="FA:16:3E:00:00:01", fixed_ips=[]))
    assert given["mac_address"] == "fa:16:3e:00:00:01"
    r = port(cloud, member, mac_address="fa:16:3e:00:00:01")
    failed(r, 409, "nubes.port.mac_in_use", given["id"])
    for bad, fragment in (("nope", "not a MAC"), ("01:00:5e:00:00:01", "multicast")):
        failed(port(cloud, member, mac_address=bad), 400, "nubes.request.invalid", fragment)
    network(cloud, member, "n2")
    r = post(cloud, "/v1/ports", {"network_id": "n2", "mac_address": "fa:16:3e:00:00:01"}, member)
    assert r.status_code == 201  # unique per network only


def test_port_security_and_updates(cloud, member, tiny):
    web = made(post(cloud, "/v1/security-groups", {"name": "web"}, member))
    r = port(cloud, member, port_security_enabled=False, security_groups=["web"])
    failed(r, 400, "nubes.request.invalid", "port_security_enabled")
    r = port(
        cloud,
        member,
        port_security_enabled=False,
        allowed_address_pairs=[{"ip_address": "1.2.3.4"}],
    )
    failed(r, 400, "nubes.request.invalid", "allowed_address_pairs")
    bare = made(port(cloud, member, port_security_enabled=False))
    assert bare["security_groups"] == []
    p = made(
        port(
            cloud,
            member,
            security_groups=["web", "default"],
            allowed_address_pairs=[{"ip_address": "10.0.0.64/26"}],
        )
    )
    assert len(p["security_groups"]) == 2
    assert p["allowed_address_pairs"] == [{"ip_address": "10.0.0.64/26"}]
    r = cloud.client.patch(
        f"/v1/ports/{p['id']}", json={"security_groups": ["web"]}, headers=member
    )
    assert r.json()["security_groups"] == [web["id"]]
    r = cloud.client.patch(
        f"/v1/ports/{p['id']}",
        json={"port_security_enabled": False, "allowed_address_pairs": []},
        headers=member,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["port_security_enabled"], r.json()["security_groups"]) == (False, [])
    r = port(cloud, member, device_owner="network:dhcp")
    failed(r, 400, "nubes.request.invalid", "reserved")


# security groups --------------------------------------------------------------------------------


def rule(cloud: Any, headers: dict[str, str], **body: Any) -> Any:
    return post(cloud, "/v1/security-group-rules", {"security_group_id": "web", **body}, headers)


def test_rules_are_validated_and_normalised(cloud, member):
    made(post(cloud, "/v1/security-groups", {"name": "web"}, member))
    ssh = made(rule(cloud, member, direction="ingress", protocol="TCP", port_range_min=22))
    assert (ssh["protocol"], ssh["port_range_min"], ssh["port_range_max"]) == ("tcp", 22, 22)
    failed(
        rule(cloud, member, direction="ingress", protocol=6, port_range_min=22, port_range_max=22),
        409,
        "nubes.security_group_rule.exists",
        ssh["id"],
    )
    web = made(
        rule(
            cloud, member, direction="ingress", protocol="tcp", port_range_min=80, port_range_max=90
        )
    )
    assert (web["port_range_min"], web["port_range_max"]) == (80, 90)
    cases = [
        ({"protocol": "tcp", "port_range_min": 90, "port_range_max": 80}, "above"),
        ({"protocol": "tcp", "port_range_min": 0}, "not a port"),
        ({"protocol": "icmp", "port_range_min": 8}, "tcp and udp only"),
        ({"port_range_min": 22}, "tcp and udp only"),
        ({"protocol": "carrier-pigeon"}, "protocol"),
        ({"protocol": "300"}, "0-255"),
        ({"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "web"}, "not both"),
        ({"remote_ip_prefix": "10.0.0.1/8"}, "did you mean 10.0.0.0/8?"),
        ({"remote_ip_prefix": "fd00::/8"}, "ethertype is IPv4"),
        ({"ethertype": "IPv4", "protocol": "icmpv6"}, "IPv6"),
    ]
    for body, fragment in cases:
        r = rule(cloud, member, direction="ingress", **body)
        failed(r, 400, "nubes.security_group_rule.invalid", fragment)
    r = rule(cloud, member, direction="ingress", protocol="udp", port_range_min=70000)
    failed(r, 400, "nubes.request.invalid", "port_range_min")
    r = rule(cloud, member, direction="sideways")
    failed(r, 400, "nubes.request.invalid", "direction")
    host = made(rule(cloud, member, direction="egress", remote_ip_prefix="192.0.2.7"))
    assert host["remote_ip_prefix"] == "192.0.2.7/32"
    numbered = made(rule(cloud, member, direction="ingress", protocol="47"))
    assert numbered["protocol"] == "47"
    listed = cloud.client.get(
        "/v1/security-group-rules", params={"security_group_id": "web"}, headers=member
    ).json()["security_group_rules"]
    assert len(listed) == 4
    assert (
        cloud.client.get("/v1/quotas/p1", headers=member).json()["in_use"]["security_group_rules"]
        == 4
    )
    assert (
        cloud.client.delete(f"/v1/security-group-rules/{ssh['id']}", headers=member).status_code
        == 204
    )
    assert (
        cloud.client.get(f"/v1/security-group-rules/{ssh['id']}", headers=member).status_code == 404
    )


def test_group_deletion_rules(cloud, member, tiny):
    made(post(cloud, "/v1/security-groups", {"name": "web"}, member))
    db = made(post(cloud, "/v1/security-groups", {"name": "db"}, member))
    failed(
        post(cloud, "/v1/security-groups", {"name": "web"}, member),
        409,
        "nubes.security_group.exists",
    )
    # db lets web in: a rule of db naming web as its remote
    made(
        post(
            cloud,
            "/v1/security-group-rules",
            {"security_group_id": "db", "direction": "ingress", "remote_group_id": "web"},
            member,
        )
    )
    p = made(port(cloud, member, security_groups=["web"]))
    r = cloud.client.delete("/v1/security-groups/web", headers=member)
    failed(r, 409, "nubes.security_group.in_use", "1 port(s)")
    made(port(cloud, member, fixed_ips=[]))  # makes the default group
    failed(
        cloud.client.delete("/v1/security-groups/default", headers=member),
        409,
        "nubes.security_group.protected",
    )
    r = cloud.client.patch("/v1/security-groups/default", json={"name": "x"}, headers=member)
    failed(r, 409, "nubes.security_group.protected")
    cloud.client.patch(f"/v1/ports/{p['id']}", json={"security_groups": []}, headers=member)
    assert cloud.client.delete("/v1/security-groups/web", headers=member).status_code == 204
    # the rule of db that named web went with it, and its quota
    assert (
        cloud.client.get("/v1/security-groups/db", headers=member).json()["security_group_rules"]
        == []
    )
    usage = cloud.client.get("/v1/quotas/p1", headers=member).json()["in_use"]
    assert (usage["security_groups"], usage["security_group_rules"]) == (2, 4)
    assert db["id"]


def test_groups_of_other_projects_are_not_found(cloud, member, tiny):
    make_project(cloud, cloud.admin, "p2")
    other = make_user(cloud, cloud.admin, "u2", "p2")
    made(post(cloud, "/v1/security-groups", {"name": "secret"}, member))
    assert cloud.client.get("/v1/security-groups/secret", headers=other).status_code == 404
    assert cloud.client.get("/v1/security-groups", headers=other).json()["security_groups"] == []
    r = post(
        cloud,
        "/v1/security-group-rules",
        {"security_group_id": "secret", "direction": "ingress"},
        other,
    )
    failed(r, 404, "nubes.security_group.not_found")


def test_lists_paginate_and_filter(cloud, member, tiny):
    ids = [made(port(cloud, member, name=f"p{i}", fixed_ips=[]))["id"] for i in range(5)]
    seen, marker = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, "network_id": "n1"} | (
            {"marker": marker} if marker else {}
        )
        page = cloud.client.get("/v1/ports", params=params, headers=member).json()
        seen += [p["id"] for p in page["ports"]]
        marker = page["next_marker"]
        if marker is None:
            break
    assert seen == ids
    named = cloud.client.get("/v1/ports", params={"name": "p3"}, headers=member).json()["ports"]
    assert [p["id"] for p in named] == [ids[3]]
    r = cloud.client.get("/v1/ports", params={"marker": "nope"}, headers=member)
    failed(r, 400, "nubes.request.invalid", "marker")


def test_every_change_is_in_the_outbox(cloud, member, tiny):
    from sqlalchemy import select

    from nubes.store.models import Event

    created = made(port(cloud, member))
    cloud.client.delete(f"/v1/ports/{created['id']}", headers=member)
    failed(
        port(cloud, member, fixed_ips=[{"ip_address": "10.9.9.9"}]),
        400,
        "nubes.subnet.address_invalid",
    )
    with cloud.services.db.read() as session:
        kinds = [
            (e.kind, e.resource_id)
            for e in session.scalars(
                select(Event)
                .where(Event.resource_type.in_(["network", "subnet", "port"]))
                .order_by(Event.id)
            )
            if e.project_id == tiny["project_id"]
        ]
    assert [k for k, _ in kinds] == [
        "network.created",
        "subnet.created",
        "port.created",
        "port.deleted",
    ]
    assert kinds[2][1] == kinds[3][1] == created["id"]
