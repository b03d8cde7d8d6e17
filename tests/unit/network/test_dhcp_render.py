"""What dnsmasq is told, line by line: only known MACs, each its reserved address, the
subnet's options, and nothing a port's data could inject."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from nubes.agent.network.dhcp import DhcpPaths, render, subnet_tag
from nubes.domain.netdesired import Subnet
from tests.unit.network import samples

PATHS = DhcpPaths(Path("/var/lib/nubes/agent/network/dhcp") / samples.NET)


def conf_values(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def test_dnsmasq_serves_only_known_macs_with_static_ranges_and_no_dns() -> None:
    files = render(samples.network(), samples.host().ports, PATHS, "ns-d0d0d0d022", 3600)
    assert conf_values(files.conf, "dhcp-ignore") == ["tag:!known"]
    assert conf_values(files.conf, "port") == ["0"]
    assert conf_values(files.conf, "interface") == ["ns-d0d0d0d022"]
    tag = subnet_tag(samples.subnet())
    assert conf_values(files.conf, "dhcp-range") == [
        f"set:{tag},10.0.0.0,static,255.255.255.0,3600"
    ]
    assert conf_values(files.conf, "dhcp-hostsfile") == [str(PATHS.hosts)]
    assert conf_values(files.conf, "pid-file") == [str(PATHS.pid)]


def test_hosts_file_lists_each_guest_once_and_never_the_dhcp_port() -> None:
    files = render(samples.network(), samples.host().ports, PATHS, "ns-x", 3600)
    assert files.hosts.splitlines() == [
        "fa:16:3e:00:00:10,10.0.0.10,vm10",
        "fa:16:3e:00:00:11,10.0.0.11,vm11",
    ]


def test_ports_of_other_networks_and_foreign_subnets_are_left_out() -> None:
    elsewhere = samples.vm_port("c3c3", "10.0.0.12", network_id="other-network")
    foreign_subnet = samples.vm_port("d4d4", "10.9.0.5", fixed_ips=(("other-subnet", "10.9.0.5"),))
    files = render(
        samples.network(), (samples.vm_port(), elsewhere, foreign_subnet), PATHS, "ns-x", 3600
    )
    assert files.hosts == "fa:16:3e:00:00:10,10.0.0.10,vm10\n"


def test_a_hostname_that_could_inject_is_dropped_but_the_address_stays() -> None:
    bad = samples.vm_port(hostname="evil,10.0.0.99\ndhcp-range=0.0.0.0")
    files = render(samples.network(), (bad,), PATHS, "ns-x", 3600)
    assert files.hosts == "fa:16:3e:00:00:10,10.0.0.10\n"


def test_options_give_router_dns_mtu_and_classless_routes_with_the_default_route() -> None:
    net = samples.network(subnets=(samples.subnet(host_routes=(("198.51.100.0/24", "10.0.0.9"),)),))
    files = render(net, (), PATHS, "ns-x", 3600)
    tag = f"tag:{subnet_tag(samples.subnet())}"
    lines = files.opts.splitlines()
    assert f"{tag},option:router,10.0.0.1" in lines
    assert f"{tag},option:dns-server,192.0.2.53" in lines
    assert f"{tag},option:mtu,1450" in lines
    # RFC 3442: a client given classless routes ignores the router option.
    routes = "198.51.100.0/24,10.0.0.9,0.0.0.0/0,10.0.0.1"
    assert f"{tag},option:classless-static-route,{routes}" in lines
    assert f"{tag},249,{routes}" in lines


def test_no_gateway_means_an_empty_router_option_and_no_dns_means_none() -> None:
    net = samples.network(subnets=(samples.subnet(gateway_ip=None, dns_nameservers=()),))
    lines = render(net, (), PATHS, "ns-x", 3600).opts.splitlines()
    tag = f"tag:{subnet_tag(samples.subnet())}"
    assert f"{tag},option:router" in lines  # dnsmasq would otherwise offer itself
    assert not any("dns-server" in line for line in lines)


def test_subnets_without_dhcp_or_ipv6_get_no_range() -> None:
    off = samples.subnet(enable_dhcp=False)
    v6 = Subnet(id="v6", cidr="2001:db8::/64", gateway_ip=None, enable_dhcp=True, ip_version=6)
    files = render(samples.network(subnets=(off, v6)), samples.host().ports, PATHS, "ns-x", 60)
    assert conf_values(files.conf, "dhcp-range") == []
    assert files.hosts == ""


def test_rendering_is_deterministic_whatever_the_port_order() -> None:
    ports = samples.host().ports
    one = render(samples.network(), ports, PATHS, "ns-x", 3600)
    two = render(samples.network(), tuple(reversed(ports)), PATHS, "ns-x", 3600)
    assert one == two
    moved = replace(samples.vm_port(), fixed_ips=((samples.SUBNET, "10.0.0.20"),))
    assert render(samples.network(), (moved,), PATHS, "ns-x", 3600).hosts.startswith(
        "fa:16:3e:00:00:10,10.0.0.20,"
    )
