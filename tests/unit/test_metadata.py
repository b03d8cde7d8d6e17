"""Instance metadata content (compute/metadata.py): the OpenStack and EC2 documents a config
drive and the metadata service carry, from an Instance row and plain NIC data."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nubes.compute.metadata import (
    config_drive_files,
    ec2_lookup,
    ec2_meta_data,
    hostname_of,
    meta_data,
    network_data,
    parse_nics,
    sanitize_hostname,
)
from nubes.domain.errors import InvalidInput
from nubes.store.models import Instance

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq3fRqAnz1IfTfPwq1Yk8pN1yLXu7o5K2hJ6Ed5Ss2p me@x"
UUID = "6a1f8f0c-8a43-4a3e-9b0e-3c9d8f0a1b2c"


def instance(**changes: Any) -> Instance:
    values: dict[str, Any] = {
        "id": UUID,
        "name": "cd-test-1",
        "project_id": "p" * 32,
        "flavor_id": "1",
        "keypair_name": None,
        "public_key": None,
        "user_data": None,
        "instance_metadata": {},
        "availability_zone": None,
    }
    values.update(changes)
    return Instance(**values)


def two_nics() -> list[dict[str, Any]]:
    return [
        {
            "port_id": "11111111-2222-3333-4444-555555555555",
            "mac": "FA:16:3E:00:00:01",
            "network_id": "net-a",
            "fixed_ips": [
                {
                    "ip_address": "10.0.0.5",
                    "subnet": {"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1",
                               "enable_dhcp": True, "dns_nameservers": ["10.0.0.2"]},
                }
            ],
        },
        {
            "port_id": "99999999-8888-7777-6666-555555555555",
            "mac": "fa:16:3e:00:00:02",
            "network_id": "net-b",
            "mtu": 1450,
            "fixed_ips": [
                {
                    "ip_address": "192.168.7.20",
                    "subnet": {
                        "cidr": "192.168.7.0/24",
                        "gateway_ip": "192.168.7.1",
                        "enable_dhcp": False,
                        "dns_nameservers": ["192.168.7.1", "10.0.0.2"],
                        "host_routes": [["172.16.0.0/12", "192.168.7.254"]],
                    },
                },
                {
                    "ip_address": "fd00::20",
                    "subnet": {"cidr": "fd00::/64", "gateway_ip": None, "enable_dhcp": False},
                },
            ],
        },
    ]  # fmt: skip


# -- hostnames ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "hostname"),
    [
        ("cd-test-1", "cd-test-1"),
        ("My Web_Server.example", "my-web-server-example"),
        ("--edge--", "edge"),
        ("é-café 2", "caf-2"),
        ("a" * 70, "a" * 63),
        ("a" * 62 + "-b", "a" * 62),  # truncated to 63, then no dash at the end
    ],
)
def test_hostnames_are_rfc_1123_labels_made_from_the_name(name: str, hostname: str) -> None:
    assert sanitize_hostname(name, default="fallback") == hostname


@pytest.mark.parametrize("name", ["", "___", "...", "名前"])
def test_a_name_with_nothing_usable_gets_the_default(name: str) -> None:
    assert sanitize_hostname(name, default="fallback") == "fallback"
    assert hostname_of(instance(name=name)) == f"server-{UUID}"


# -- meta_data.json ----------------------------------------------------------------------------


def test_meta_data_has_exactly_the_openstack_keys() -> None:
    row = instance(
        name="Web 1",
        keypair_name="mine",
        public_key=KEY + "\n",
        instance_metadata={"role": "web", "tier": 2},
        availability_zone="zone-b",
    )
    doc = meta_data(row)
    assert doc == {
        "uuid": UUID,
        "name": "Web 1",
        "hostname": "web-1",
        "launch_index": 0,
        "availability_zone": "zone-b",
        "project_id": "p" * 32,
        "public_keys": {"mine": KEY},
        "keys": [{"name": "mine", "type": "ssh", "data": KEY}],
        "meta": {"role": "web", "tier": "2"},
        "devices": [],
    }


def test_meta_data_without_key_zone_or_metadata() -> None:
    doc = meta_data(instance(instance_metadata=None))
    assert doc["public_keys"] == {}
    assert doc["keys"] == []
    assert doc["meta"] == {}
    assert doc["availability_zone"] == "nova"
    assert meta_data(instance(), availability_zone="az9")["availability_zone"] == "az9"


# -- network_data.json -------------------------------------------------------------------------


def test_network_data_without_nics_is_empty_but_complete() -> None:
    assert network_data(parse_nics(None)) == {"links": [], "networks": [], "services": []}
    assert network_data(parse_nics([])) == {"links": [], "networks": [], "services": []}


def test_network_data_with_two_nics() -> None:
    doc = network_data(parse_nics(two_nics()))
    assert doc["links"] == [
        {
            "id": "tap11111111222",
            "vif_id": "11111111-2222-3333-4444-555555555555",
            "type": "bridge",
            "mtu": 1500,
            "ethernet_mac_address": "fa:16:3e:00:00:01",
        },
        {
            "id": "tap99999999888",
            "vif_id": "99999999-8888-7777-6666-555555555555",
            "type": "bridge",
            "mtu": 1450,
            "ethernet_mac_address": "fa:16:3e:00:00:02",
        },
    ]
    dhcp, static4, static6 = doc["networks"]
    assert dhcp == {
        "id": "network0",
        "type": "ipv4_dhcp",
        "link": "tap11111111222",
        "network_id": "net-a",
    }
    assert static4 == {
        "id": "network1",
        "type": "ipv4",
        "link": "tap99999999888",
        "network_id": "net-b",
        "ip_address": "192.168.7.20",
        "netmask": "255.255.255.0",
        "routes": [
            {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.168.7.1"},
            {"network": "172.16.0.0", "netmask": "255.240.0.0", "gateway": "192.168.7.254"},
        ],
        "services": [
            {"type": "dns", "address": "192.168.7.1"},
            {"type": "dns", "address": "10.0.0.2"},
        ],
    }
    assert static6["type"] == "ipv6"
    assert static6["ip_address"] == "fd00::20"
    assert static6["netmask"] == "ffff:ffff:ffff:ffff::"
    assert static6["routes"] == []  # no gateway: no default route
    assert doc["services"] == [
        {"type": "dns", "address": "10.0.0.2"},
        {"type": "dns", "address": "192.168.7.1"},
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda n: n.pop("mac"), r"nics\[0\]\.mac: expected a non-empty string"),
        (lambda n: n.update(mtu=40), r"nics\[0\]\.mtu: 68 to 65535"),
        (
            lambda n: n["fixed_ips"][0].update(ip_address="10.9.9.9"),
            r"nics\[0\]\.fixed_ips\[0\]\.ip_address: 10\.9\.9\.9 is not in 10\.0\.0\.0/24",
        ),
        (
            lambda n: n["fixed_ips"][0]["subnet"].update(cidr="10.0.0.0/33"),
            r"nics\[0\]\.fixed_ips\[0\]: .*10\.0\.0\.0/33",
        ),
        (lambda n: n["fixed_ips"][0].pop("subnet"), r"nics\[0\]\.fixed_ips\[0\]\.subnet"),
        (
            lambda n: n["fixed_ips"][0]["subnet"].update(gateway_ip="router"),
            r"nics\[0\]\.fixed_ips\[0\]: .*'router'",
        ),
        (
            lambda n: n["fixed_ips"][0]["subnet"].update(host_routes=[["nowhere", "10.0.0.1"]]),
            r"nics\[0\]\.fixed_ips\[0\]: .*'nowhere'",
        ),
        (lambda n: n.update(fixed_ips=["10.0.0.5"]), r"nics\[0\]\.fixed_ips\[0\]: expected an"),
    ],
)
def test_bad_nic_data_is_refused_naming_the_field(change: Any, message: str) -> None:
    nics = two_nics()
    change(nics[0])
    with pytest.raises(InvalidInput, match=message):
        parse_nics(nics)


# -- EC2 ---------------------------------------------------------------------------------------


def test_ec2_meta_data_tree_and_lookups() -> None:
    row = instance(keypair_name="mine", public_key=KEY, flavor_id="7")
    tree = ec2_meta_data(row, parse_nics(two_nics()), instance_type="m1.small")
    assert tree == {
        "instance-id": UUID,
        "ami-launch-index": "0",
        "instance-type": "m1.small",
        "hostname": "cd-test-1",
        "local-hostname": "cd-test-1",
        "local-ipv4": "10.0.0.5",
        "placement": {"availability-zone": "nova"},
        "public-keys": {"0": {"_name": "0=mine", "openssh-key": KEY}},
    }
    assert ec2_lookup(tree, "") == "\n".join(
        [
            "ami-launch-index",
            "hostname",
            "instance-id",
            "instance-type",
            "local-hostname",
            "local-ipv4",
            "placement/",
            "public-keys/",
        ]
    )
    assert ec2_lookup(tree, "public-keys/") == "0=mine"
    assert ec2_lookup(tree, "public-keys/0/") == "openssh-key"
    assert ec2_lookup(tree, "public-keys/0=mine/openssh-key") == KEY
    assert ec2_lookup(tree, "placement/availability-zone") == "nova"
    assert ec2_lookup(tree, "local-hostname") == "cd-test-1"
    for missing in ("nothing", "hostname/deeper", "public-keys/0/_name", "public-keys/1"):
        assert ec2_lookup(tree, missing) is None


def test_ec2_without_nics_or_keys() -> None:
    tree = ec2_meta_data(instance(flavor_id="7"))
    assert tree["local-ipv4"] == ""
    assert tree["instance-type"] == "7"
    assert "public-keys" not in tree


# -- the config drive's files ------------------------------------------------------------------

WITHOUT_USER_DATA = {
    f"openstack/{version}/{name}"
    for version in ("2018-08-27", "latest")
    for name in ("meta_data.json", "network_data.json", "vendor_data.json")
} | {"ec2/latest/meta-data.json"}


def test_files_without_user_data() -> None:
    files = config_drive_files(instance())
    assert set(files) == WITHOUT_USER_DATA
    assert json.loads(files["openstack/latest/vendor_data.json"]) == {}
    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert meta["hostname"] == "cd-test-1"
    assert files["openstack/2018-08-27/meta_data.json"] == files["openstack/latest/meta_data.json"]
    assert json.loads(files["ec2/latest/meta-data.json"])["instance-id"] == UUID


def test_files_with_user_data_and_nics() -> None:
    script = "#!/bin/sh\necho héllo\n"
    files = config_drive_files(instance(user_data=script), two_nics(), instance_type="m1.tiny")
    assert set(files) == WITHOUT_USER_DATA | {
        "openstack/latest/user_data",
        "openstack/2018-08-27/user_data",
        "ec2/latest/user-data",
    }
    assert files["openstack/latest/user_data"] == script.encode()
    network = json.loads(files["openstack/latest/network_data.json"])
    assert [n["type"] for n in network["networks"]] == ["ipv4_dhcp", "ipv4", "ipv6"]
    assert json.loads(files["ec2/latest/meta-data.json"])["instance-type"] == "m1.tiny"


def test_equal_inputs_give_equal_bytes_and_a_change_shows() -> None:
    first = config_drive_files(instance(instance_metadata={"b": "1", "a": "2"}))
    again = config_drive_files(instance(instance_metadata={"a": "2", "b": "1"}))
    changed = config_drive_files(instance(instance_metadata={"a": "3", "b": "1"}))
    assert first == again
    assert first["openstack/latest/meta_data.json"] != changed["openstack/latest/meta_data.json"]
