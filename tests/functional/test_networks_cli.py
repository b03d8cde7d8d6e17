"""`nubes network`, `subnet`, `port`, `security-group`, `router` and `floating-ip` against the
in-process API, as the cloud admin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from tests.functional.cli_harness import Run, admin_runner, data, ok


@pytest.fixture
def nubes(cloud: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Run:
    return admin_runner(cloud, monkeypatch, tmp_path)


def error(result: Result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), line
    assert "Traceback" not in result.output
    return line


def test_networks_and_subnets(nubes: Run) -> None:
    net = data(nubes("network", "create", "n1", "-f", "json"))
    assert (net["network_type"], net["segmentation_id"], net["mtu"]) == ("vxlan", 2, 1450)
    vlan = data(
        nubes(
            "network", "create", "v1", "--type", "vlan", "--segment", "42",
            "--physical-network", "physnet1", "--shared", "-f", "json",
        )
    )  # fmt: skip
    assert (vlan["segmentation_id"], vlan["shared"], vlan["mtu"]) == (42, True, 1500)
    sub = data(
        nubes(
            "subnet", "create", "s1", "--network", "n1", "--cidr", "10.0.0.0/24",
            "--pool", "10.0.0.10-10.0.0.20", "--pool", "10.0.0.30-10.0.0.40",
            "--dns", "10.0.0.53", "--route", "192.168.0.0/16=10.0.0.254", "--no-dhcp",
            "-f", "json",
        )
    )  # fmt: skip
    assert sub["allocation_pools"] == [
        {"start": "10.0.0.10", "end": "10.0.0.20"},
        {"start": "10.0.0.30", "end": "10.0.0.40"},
    ]
    assert sub["host_routes"] == [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}]
    assert (sub["enable_dhcp"], sub["dns_nameservers"]) == (False, ["10.0.0.53"])
    bare = data(
        nubes("subnet", "create", "s2", "--network", "v1", "--cidr", "10.1.0.0/29",
              "--no-gateway", "-f", "json")
    )  # fmt: skip
    assert bare["gateway_ip"] is None
    table = ok(nubes("subnet", "show", "s1")).stdout
    assert "10.0.0.10-10.0.0.20" in table
    assert "192.168.0.0/16 via 10.0.0.254" in table
    listed = data(nubes("subnet", "list", "--network", "n1", "-f", "json"))
    assert [s["name"] for s in listed] == ["s1"]
    assert "n1" in ok(nubes("network", "list")).stdout
    renamed = data(nubes("network", "set", "n1", "--name", "n1b", "-f", "json"))
    assert renamed["name"] == "n1b"
    changed = data(nubes("subnet", "set", "s1", "--dhcp", "--dns", "10.0.0.54", "-f", "json"))
    assert (changed["enable_dhcp"], changed["dns_nameservers"]) == (True, ["10.0.0.54"])
    assert "did you mean 10.2.0.0/24?" in error(
        nubes("subnet", "create", "bad", "--network", "n1b", "--cidr", "10.2.0.1/24")
    )
    assert nubes("subnet", "create", "bad", "--network", "n1b", "--cidr", "10.2.0.0/24",
                 "--pool", "nonsense").exit_code == 2  # fmt: skip
    assert nubes("subnet", "create", "bad", "--network", "n1b", "--cidr", "10.2.0.0/24",
                 "--gateway", "10.2.0.1", "--no-gateway").exit_code == 2  # fmt: skip
    ok(nubes("subnet", "delete", "s2"))
    ok(nubes("network", "delete", "n1b", "v1"))
    assert "no network 'n1b'" in error(nubes("network", "show", "n1b"))


def test_ports_and_security_groups(nubes: Run) -> None:
    ok(nubes("network", "create", "n1"))
    sub = data(
        nubes("subnet", "create", "s1", "--network", "n1", "--cidr", "10.0.0.0/24", "-f", "json")
    )
    group = data(nubes("security-group", "create", "web", "-f", "json"))
    assert group["security_group_rules"] == []
    rule = data(
        nubes("security-group", "rule", "create", "web", "--protocol", "tcp", "--port", "80:90",
              "--remote-ip", "192.0.2.0/24", "-f", "json")
    )  # fmt: skip
    assert (rule["port_range_min"], rule["port_range_max"], rule["protocol"]) == (80, 90, "tcp")
    ssh = data(
        nubes(
            "security-group",
            "rule",
            "create",
            "web",
            "--protocol",
            "tcp",
            "--port",
            "22",
            "-f",
            "json",
        )
    )
    assert (ssh["port_range_min"], ssh["port_range_max"]) == (22, 22)
    data(nubes("security-group", "rule", "create", "web", "--direction", "egress",
               "--remote-group", "web", "-f", "json"))  # fmt: skip
    assert "above" in error(
        nubes("security-group", "rule", "create", "web", "--protocol", "tcp", "--port", "90:80")
    )
    assert nubes("security-group", "rule", "create", "web", "--port", "x").exit_code == 2
    shown = ok(nubes("security-group", "show", "web")).stdout
    assert "ingress IPv4 tcp 80:90 from 192.0.2.0/24" in shown
    assert len(data(nubes("security-group", "rule", "list", "web", "-f", "json"))) == 3
    port = data(
        nubes("port", "create", "p1", "--network", "n1", "--fixed-ip",
              f"subnet={sub['id']},ip-address=10.0.0.7", "--security-group", "web",
              "--mac", "fa:16:3e:aa:bb:cc", "-f", "json")
    )  # fmt: skip
    assert port["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.0.0.7"}]
    assert (port["mac_address"], port["security_groups"]) == ("fa:16:3e:aa:bb:cc", [group["id"]])
    assert "10.0.0.7 on subnet s1 is in use by port" in error(
        nubes("port", "create", "p2", "--network", "n1", "--fixed-ip", "ip-address=10.0.0.7")
    )
    assert nubes("port", "create", "p2", "--network", "n1", "--fixed-ip", "subnet").exit_code == 2
    assert "10.0.0.7" in ok(nubes("port", "list", "--network", "n1")).stdout
    assert "in use by 1 port" in error(nubes("security-group", "delete", "web"))
    moved = data(nubes("port", "set", "p1", "--security-group", "default", "-f", "json"))
    assert moved["security_groups"] != [group["id"]]
    ok(nubes("security-group", "delete", "web"))
    assert "cannot be deleted" in error(nubes("security-group", "delete", "default"))
    names = [g["name"] for g in data(nubes("security-group", "list", "-f", "json"))]
    assert names == ["default"]
    ok(nubes("port", "delete", "p1"))


def test_routers_and_floating_ips(nubes: Run) -> None:
    ok(
        nubes(
            "network",
            "create",
            "public",
            "--type",
            "flat",
            "--physical-network",
            "ext",
            "--external",
        )
    )
    ok(
        nubes(
            "subnet",
            "create",
            "public-subnet",
            "--network",
            "public",
            "--cidr",
            "203.0.113.0/24",
            "--no-dhcp",
        )
    )
    ok(nubes("network", "create", "inside"))
    ok(nubes("subnet", "create", "inside-subnet", "--network", "inside", "--cidr", "10.0.0.0/24"))
    port = data(nubes("port", "create", "server", "--network", "inside", "-f", "json"))
    router = data(nubes("router", "create", "r1", "-f", "json"))
    assert router["external_gateway_info"] is None
    fip = data(nubes("floating-ip", "create", "public", "-f", "json"))
    assert "router add-subnet" in error(nubes("floating-ip", "set", fip["id"], "--port", "server"))
    with_interface = data(nubes("router", "add-subnet", "r1", "inside-subnet", "-f", "json"))
    assert with_interface["interfaces"][0]["ip_address"] == "10.0.0.1"
    with_gateway = data(
        nubes("router", "set", "r1", "--external-gateway", "public", "--no-snat", "-f", "json")
    )
    assert with_gateway["external_gateway_info"]["enable_snat"] is False
    mapped = data(
        nubes("floating-ip", "set", fip["floating_ip_address"], "--port", "server", "-f", "json")
    )
    assert (mapped["port_id"], mapped["fixed_ip_address"]) == (
        port["id"], port["fixed_ips"][0]["ip_address"],
    )  # fmt: skip
    table = ok(nubes("router", "show", "r1")).stdout
    assert "10.0.0.1" in table
    assert fip["floating_ip_address"] in ok(nubes("floating-ip", "list")).stdout
    assert "floating IP" in error(nubes("router", "unset", "r1", "--external-gateway"))
    assert "interface" in error(nubes("router", "delete", "r1"))
    assert data(nubes("floating-ip", "unset", fip["id"], "-f", "json"))["port_id"] is None
    assert (
        data(nubes("router", "remove-subnet", "r1", "inside-subnet", "-f", "json"))["interfaces"]
        == []
    )
    assert (
        data(nubes("router", "unset", "r1", "--external-gateway", "-f", "json"))[
            "external_gateway_info"
        ]
        is None
    )
    ok(nubes("floating-ip", "delete", fip["id"]))
    ok(nubes("router", "delete", "r1"))
    assert data(nubes("router", "list", "-f", "json")) == []
    assert nubes("router", "unset", "r1").exit_code == 2
