"""The nftables ruleset, read for its meaning: which chain a port's frames go through, what
each chain lets through, and that no desired value becomes nft syntax. (That the kernel
accepts it and that it filters is tested in tests/integration/network.)"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from nubes.agent.network.firewall import (
    MARK_SOURCE_SHIFT,
    RulesetError,
    conntrack_zone,
    installed_digest,
    link_local,
    render,
    replace_script,
)
from nubes.domain.netdesired import Rule, tap_name, vxlan_name
from tests.unit.network import samples


def table(text: str, family: str) -> str:
    found = re.search(rf"^table {family} nubes \{{\n(.*?)^\}}$", text, re.S | re.M)
    assert found, f"no {family} table"
    return found.group(1)


def chain(text: str, family: str, name: str) -> list[str]:
    found = re.search(rf"^  chain {name} \{{\n(.*?)^  \}}$", table(text, family), re.S | re.M)
    assert found, f"no chain {name} in {family}"
    return [line.strip() for line in found.group(1).splitlines()]


def suffix(port_id: str) -> str:
    return tap_name(port_id)


def test_a_guest_may_send_only_from_its_mac_and_addresses_arp_included() -> None:
    text = render(samples.host(), "nubes").text
    lines = chain(text, "bridge", f"spoof_{suffix(samples.VM1)}")
    assert "ether saddr != fa:16:3e:00:00:10 drop" in lines
    assert "arp saddr ether != fa:16:3e:00:00:10 drop" in lines
    assert "arp saddr ip != { 0.0.0.0, 10.0.0.10 } drop" in lines
    assert "ip saddr != 10.0.0.10 drop" in lines or "ip saddr != { 10.0.0.10 } drop" in lines
    assert "ip6 saddr != { ::, fe80::f816:3eff:fe00:10 } drop" in lines
    assert "ether type != { ip, arp, ip6 } drop" in lines


def test_dhcp_server_replies_and_router_advertisements_from_guests_are_dropped() -> None:
    lines = chain(render(samples.host(), "nubes").text, "bridge", f"spoof_{suffix(samples.VM1)}")
    assert lines.index("udp sport 67 drop") < lines.index(
        "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return"
    )
    assert "udp sport 547 drop" in lines
    assert "icmpv6 type { nd-router-advert, nd-redirect } drop" in lines


def test_every_filtered_port_is_routed_to_its_own_chains_by_name_and_mark() -> None:
    text = render(samples.host(), "nubes").text
    prerouting = " ".join(chain(text, "bridge", "prerouting"))
    forward = chain(text, "bridge", "forward")
    inet_forward = " ".join(chain(text, "inet", "forward"))
    for index, port_id in enumerate(sorted((samples.VM1, samples.VM2)), start=1):
        tap = suffix(port_id)
        assert f'"{tap}" : jump spoof_{tap}' in prerouting
        source, destination = index << MARK_SOURCE_SHIFT, index
        assert f'iifname "{tap}" meta mark set meta mark | {source:#010x}' in forward
        assert f'oifname "{tap}" meta mark set meta mark | {destination:#010x}' in forward
        assert f"{source:#010x} : jump egress_{tap}" in inet_forward
        assert f"{destination:#010x} : jump ingress_{tap}" in inet_forward


def test_dhcp_ports_and_ports_without_port_security_are_not_filtered() -> None:
    open_port = samples.vm_port(samples.VM2, "10.0.0.11", port_security=False)
    desired = samples.host(samples.dhcp_port(), samples.vm_port(), open_port)
    text = render(desired, "nubes", uplinks=[vxlan_name(samples.NET)]).text
    for port_id in (samples.DHCP_PORT, samples.VM2):
        assert f"spoof_{suffix(port_id)}" not in text
        assert f"ingress_{suffix(port_id)}" not in text
    # ... but their devices are ours: stale mark bits on them are cleared.
    ports = " ".join(table(text, "bridge").split("set ports")[1].split("}")[0].split())
    assert f'"{suffix(samples.DHCP_PORT)}"' in ports
    assert f'"{vxlan_name(samples.NET)}"' in ports


def test_ingress_lets_return_traffic_dhcp_and_listed_rules_through_then_drops() -> None:
    lines = chain(render(samples.host(), "nubes").text, "inet", f"ingress_{suffix(samples.VM1)}")
    assert lines[0] == "ct state established,related return"
    assert "udp sport 67 udp dport 68 return" in lines
    assert "meta nfproto ipv4 ip saddr 10.0.0.0/24 tcp dport 22 return" in lines
    assert lines[-1] == "drop"
    rule_lines = [line for line in lines if line.startswith("meta nfproto")]
    assert len(rule_lines) == 1  # the egress rules went to the egress chain


def test_egress_rules_match_destinations() -> None:
    rules = (Rule("egress", protocol="udp", port_min=53, port_max=53, remote=("192.0.2.53",)),)
    port = samples.vm_port(rules=rules)
    lines = chain(render(samples.host(port), "nubes").text, "inet", f"egress_{suffix(samples.VM1)}")
    assert "meta nfproto ipv4 ip daddr 192.0.2.53 udp dport 53 return" in lines
    assert "udp sport 68 udp dport 67 return" in lines  # a DHCP client always may ask
    assert lines[-1] == "drop"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (Rule("ingress", protocol="tcp", port_min=8000, port_max=8080), "tcp dport 8000-8080"),
        (Rule("ingress", protocol="udp"), "meta l4proto udp"),
        (Rule("ingress", protocol="icmp", port_min=8, port_max=0), "icmp type 8 icmp code 0"),
        (Rule("ingress", "IPv6", protocol="icmp", port_min=128), "icmpv6 type 128"),
        (Rule("ingress", protocol="47"), "meta l4proto 47"),
        (Rule("ingress", "IPv6", remote=("2001:db8::/64",)), "ip6 saddr 2001:db8::/64"),
    ],
)
def test_rule_shapes(rule: Rule, expected: str) -> None:
    port = samples.vm_port(rules=(rule,))
    lines = chain(
        render(samples.host(port), "nubes").text, "inet", f"ingress_{suffix(samples.VM1)}"
    )
    assert any(expected in line and line.endswith("return") for line in lines), lines


def test_rules_that_match_nobody_or_cannot_be_expressed_open_nothing() -> None:
    rules = (
        Rule("ingress", protocol="tcp", port_min=22, port_max=22, remote=()),
        Rule("ingress", "IPv4", remote=("2001:db8::/64",)),  # no IPv4 remote at all
        Rule("ingress", protocol="gopher"),
        Rule("ingress", protocol="tcp", port_min=90, port_max=80),
    )
    ruleset = render(samples.host(samples.vm_port(rules=rules)), "nubes")
    lines = chain(ruleset.text, "inet", f"ingress_{suffix(samples.VM1)}")
    assert not [line for line in lines if line.startswith("meta nfproto")]
    assert len(ruleset.skipped) == 2
    assert "gopher" in ruleset.skipped[0]


def test_overlapping_allowed_addresses_are_merged_for_nft_interval_sets() -> None:
    port = samples.vm_port(allowed_addresses=("10.0.0.0/28", "10.0.0.12"))
    lines = chain(
        render(samples.host(port), "nubes").text, "bridge", f"spoof_{suffix(samples.VM1)}"
    )
    assert "arp saddr ip != { 0.0.0.0, 10.0.0.0/28 } drop" in lines


@pytest.mark.parametrize(
    "port",
    [
        samples.vm_port(mac='fa:16:3e:00:00:10" accept'),
        samples.vm_port(port_id='x"; flush ruleset; "'),
    ],
)
def test_a_value_that_would_become_syntax_is_refused(port: object) -> None:
    with pytest.raises(RulesetError):
        render(samples.host(port), "nubes")  # type: ignore[arg-type]


def test_the_digest_follows_the_content() -> None:
    one = render(samples.host(), "nubes")
    assert render(samples.host(), "nubes").digest == one.digest
    changed = samples.host(samples.vm_port(rules=(samples.SSH_FROM_SUBNET, *samples.ALL_EGRESS)))
    assert render(changed, "nubes").digest != one.digest
    assert f'comment "nubes sha256:{one.digest}"' in table(one.text, "inet")
    listing = (
        f'table inet nubes {{\n\tcomment "nubes sha256:{one.digest}"\n\tchain x {{\n\t}}\n}}\n'
    )
    assert installed_digest(listing) == one.digest
    assert installed_digest("table inet nubes {\n}\n") is None


def test_the_script_replaces_only_our_tables_in_one_transaction() -> None:
    script = replace_script("nubes", "NEW")
    assert script.splitlines() == [
        "table bridge nubes {}",
        "delete table bridge nubes",
        "table inet nubes {}",
        "delete table inet nubes",
        "NEW",
    ]


def test_each_network_gets_a_stable_conntrack_zone_on_its_bridge() -> None:
    text = render(samples.host(), "nubes").text
    bridge = samples.network().bridge
    zone = conntrack_zone(samples.NET)
    assert 1 <= zone <= 65535
    assert zone == conntrack_zone(samples.NET)
    assert f'iifname "{bridge}" ct zone set {zone}' in chain(text, "inet", "zones")


def test_link_local_is_the_eui64_of_the_mac() -> None:
    assert link_local("52:54:00:12:34:56") == "fe80::5054:ff:fe12:3456"
    assert link_local("FA:16:3E:00:00:10") == "fe80::f816:3eff:fe00:10"


def test_an_unsafe_table_name_is_refused() -> None:
    with pytest.raises(RulesetError):
        render(replace(samples.host()), "nubes; flush ruleset")
