"""Trusted DHCP for one network: the text of dnsmasq's configuration, hosts file and options
file, rendered from the desired network and its ports. Pure: no I/O (:mod:`.dnsmasq` runs it).

dnsmasq answers only the MACs listed in the hosts file (``dhcp-ignore=tag:!known``), each with
its reserved address (``static`` ranges: no pool to hand out), so a guest can never take
another's address or one nubes did not allocate. DNS is off (``port=0``): clients get the
subnet's ``dns_nameservers`` and nothing else. IPv4 only: IPv6 guests configure themselves
from router advertisements (routers are not part of this data plane yet).

What may change without a restart (SIGHUP re-reads them): the hosts and options files. A
change of the configuration file itself (ranges, interface) restarts dnsmasq.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nubes.domain.netdesired import Network, Port, Subnet

#: RFC 1123 host labels; anything else is left out of the hosts file (a comma would inject).
_HOSTNAME = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class DhcpPaths:
    """One network's dnsmasq files, in a directory of their own (removed with the network)."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "dnsmasq.conf"

    @property
    def hosts(self) -> Path:
        return self.root / "hosts"

    @property
    def opts(self) -> Path:
        return self.root / "opts"

    @property
    def pid(self) -> Path:
        return self.root / "dnsmasq.pid"

    @property
    def leases(self) -> Path:
        return self.root / "leases"

    @property
    def log(self) -> Path:
        return self.root / "dnsmasq.log"


@dataclass(frozen=True)
class DhcpFiles:
    conf: str
    hosts: str
    opts: str


def dhcp_subnets(network: Network) -> list[Subnet]:
    return [s for s in network.subnets if s.enable_dhcp and s.ip_version == 4]


def subnet_tag(subnet: Subnet) -> str:
    return "subnet-" + re.sub(r"[^A-Za-z0-9]", "", subnet.id)[:16]


def valid_mac(mac: str) -> bool:
    return _MAC.match(mac.lower()) is not None


def host_lines(subnets: list[Subnet], ports: Iterable[Port]) -> list[str]:
    """``MAC,address[,hostname]`` for every compute port with an address on a DHCP subnet
    (dnsmasq gives one IPv4 address per MAC: the first one wins)."""
    by_id = {s.id: ipaddress.ip_network(s.cidr, strict=False) for s in subnets}
    lines = []
    for port in sorted(ports, key=lambda p: p.id):
        if not port.device_owner.startswith("compute") or not valid_mac(port.mac):
            continue
        address = next(
            (
                ip
                for subnet_id, ip in port.fixed_ips
                if subnet_id in by_id and ipaddress.ip_address(ip) in by_id[subnet_id]
            ),
            None,
        )
        if address is None:
            continue
        name = port.hostname if _HOSTNAME.match(port.hostname or "") else ""
        lines.append(",".join(filter(None, (port.mac.lower(), address, name))))
    return lines


def option_lines(subnet: Subnet, mtu: int) -> list[str]:
    tag = f"tag:{subnet_tag(subnet)}"
    net = ipaddress.ip_network(subnet.cidr, strict=False)
    # An empty router option keeps dnsmasq from offering itself as the gateway.
    gateway = str(ipaddress.ip_address(subnet.gateway_ip)) if subnet.gateway_ip else ""
    lines = [f"{tag},option:router" + (f",{gateway}" if gateway else "")]
    servers = [str(ipaddress.ip_address(s)) for s in subnet.dns_nameservers]
    if servers:
        lines.append(f"{tag},option:dns-server,{','.join(servers)}")
    routes = [
        (str(ipaddress.ip_network(dest, strict=False)), str(ipaddress.ip_address(hop)))
        for dest, hop in subnet.host_routes
        if ipaddress.ip_network(dest, strict=False).version == net.version
    ]
    if routes:
        # A client that gets classless routes ignores the router option (RFC 3442): the
        # default route has to be one of them.
        if gateway and not any(dest == "0.0.0.0/0" for dest, _ in routes):
            routes.append(("0.0.0.0/0", gateway))
        flat = ",".join(f"{dest},{hop}" for dest, hop in routes)
        lines.append(f"{tag},option:classless-static-route,{flat}")
        lines.append(f"{tag},249,{flat}")  # the same, for Windows clients
    lines.append(f"{tag},option:mtu,{mtu}")
    return lines


def render(
    network: Network,
    ports: Iterable[Port],
    paths: DhcpPaths,
    interface: str,
    lease_seconds: int,
) -> DhcpFiles:
    subnets = dhcp_subnets(network)
    ports = [p for p in ports if p.network_id == network.id]
    conf = [
        f"# Written by nubes for network {network.id}; rewritten when it changes, do not edit.",
        "port=0",
        "no-resolv",
        "no-hosts",
        "bind-interfaces",
        f"interface={interface}",
        "except-interface=lo",
        f"pid-file={paths.pid}",
        f"dhcp-leasefile={paths.leases}",
        f"dhcp-hostsfile={paths.hosts}",
        f"dhcp-optsfile={paths.opts}",
        f"log-facility={paths.log}",
        "dhcp-ignore=tag:!known",
        "dhcp-authoritative",
    ]
    for subnet in subnets:
        net = ipaddress.ip_network(subnet.cidr, strict=False)
        conf.append(
            f"dhcp-range=set:{subnet_tag(subnet)},{net.network_address},static,"
            f"{net.netmask},{lease_seconds}"
        )
    opts = [line for subnet in subnets for line in option_lines(subnet, network.mtu)]
    return DhcpFiles(
        conf="\n".join(conf) + "\n",
        hosts="".join(f"{line}\n" for line in host_lines(subnets, ports)),
        opts="".join(f"{line}\n" for line in opts),
    )
