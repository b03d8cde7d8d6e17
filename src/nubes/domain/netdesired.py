"""What one host's virtual networking should look like: the contract between the controller
(``nubes.network`` computes it for a host) and the agent (``nubes.agent.network`` converges the
host to it). Plain frozen data that crosses HTTP as JSON (:func:`to_json`, :func:`from_json`).

Everything the agent creates is named from these ids (see :func:`bridge_name`,
:func:`tap_name`, ...), so a restarted agent finds and adopts what exists and removes what no
longer appears here. Linux limits interface names to 15 characters; every name below fits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def _short(resource_id: str, length: int = 10) -> str:
    return resource_id.replace("-", "")[:length]


def bridge_name(network_id: str) -> str:
    return f"nbr-{_short(network_id)}"


def vxlan_name(network_id: str) -> str:
    return f"nvx-{_short(network_id)}"


def vlan_name(network_id: str) -> str:
    return f"nvl-{_short(network_id)}"


def tap_name(port_id: str) -> str:
    """The host side of an instance's NIC (a tap for QEMU, a veth end for LXC)."""
    return f"tap{_short(port_id, 11)}"


def netns_name(kind: str, resource_id: str, prefix: str = "nubes") -> str:
    """Namespaces the agent owns: ``nubes-dhcp-<network>``, ``nubes-router-<router>``.
    Namespace names are global on a machine: ``prefix`` (the agent's ``namespace_prefix``)
    keeps two agents on one machine (test hosts) apart."""
    return f"{prefix}-{kind}-{_short(resource_id, 12)}"


@dataclass(frozen=True)
class Subnet:
    id: str
    cidr: str
    gateway_ip: str | None
    enable_dhcp: bool
    ip_version: int = 4
    dns_nameservers: tuple[str, ...] = ()
    #: (destination CIDR, next hop)
    host_routes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Rule:
    """One security-group rule, with its remote group already resolved to addresses."""

    direction: str  # ingress | egress
    ethertype: str = "IPv4"  # IPv4 | IPv6
    protocol: str | None = None  # tcp | udp | icmp | None for any
    port_min: int | None = None
    port_max: int | None = None
    #: None: from/to anywhere; otherwise these CIDRs only (an empty tuple matches nobody)
    remote: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Port:
    id: str
    network_id: str
    mac: str
    #: (subnet id, address)
    fixed_ips: tuple[tuple[str, str], ...]
    device_owner: str  # compute | network:dhcp | network:router_interface | network:router_gateway
    device_id: str = ""  # the instance, router or host this port belongs to
    hostname: str = ""
    port_security: bool = True
    #: the union of the port's security groups' rules; ingress not matched here is dropped
    rules: tuple[Rule, ...] = ()
    #: addresses besides the fixed IPs this port may send from (OpenStack allowed pairs)
    allowed_addresses: tuple[str, ...] = ()

    @property
    def tap(self) -> str:
        return tap_name(self.id)


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    type: str  # local | flat | vxlan | vlan
    mtu: int = 1500
    segmentation_id: int | None = None  # the VNI (vxlan) or VLAN id
    #: the host's uplink for flat and vlan networks (from the agent's configuration)
    physical_network: str | None = None
    subnets: tuple[Subnet, ...] = ()
    #: management addresses of the other hosts with ports on this network (vxlan flooding)
    vxlan_peers: tuple[str, ...] = ()
    external: bool = False

    @property
    def bridge(self) -> str:
        return bridge_name(self.id)


@dataclass(frozen=True)
class FloatingIp:
    id: str
    address: str  # on the external network
    fixed_address: str  # the instance's address behind the router
    port_id: str


@dataclass(frozen=True)
class RouterInterface:
    network_id: str
    subnet_id: str
    port_id: str
    mac: str
    address: str
    prefixlen: int


@dataclass(frozen=True)
class Router:
    id: str
    name: str
    #: gateway on the external network: (network id, port id, mac, address, prefixlen)
    external_network_id: str | None = None
    gateway_port_id: str | None = None
    gateway_mac: str | None = None
    gateway_address: str | None = None
    gateway_prefixlen: int | None = None
    external_gateway_ip: str | None = None  # the external subnet's gateway (default route)
    snat: bool = True
    interfaces: tuple[RouterInterface, ...] = ()
    floating_ips: tuple[FloatingIp, ...] = ()


@dataclass(frozen=True)
class HostNetworks:
    """Everything networking one host must have: the networks its ports use, its ports (its
    instances' NICs and its DHCP ports), and the routers placed on it."""

    networks: tuple[Network, ...] = ()
    ports: tuple[Port, ...] = ()
    routers: tuple[Router, ...] = ()
    #: where the agent's metadata proxy forwards (the controller's URL); empty: no metadata
    metadata_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def to_json(value: HostNetworks) -> dict[str, Any]:
    return asdict(value)


def _tuple(values: Any) -> tuple[Any, ...]:
    return tuple(tuple(v) if isinstance(v, list) else v for v in values or ())


def _rule(data: dict[str, Any]) -> Rule:
    remote = data.get("remote")
    return Rule(**{**data, "remote": None if remote is None else tuple(remote)})


def _port(data: dict[str, Any]) -> Port:
    return Port(
        **{
            **data,
            "fixed_ips": _tuple(data.get("fixed_ips")),
            "rules": tuple(_rule(r) for r in data.get("rules") or ()),
            "allowed_addresses": tuple(data.get("allowed_addresses") or ()),
        }
    )


def _subnet(data: dict[str, Any]) -> Subnet:
    return Subnet(
        **{
            **data,
            "dns_nameservers": tuple(data.get("dns_nameservers") or ()),
            "host_routes": _tuple(data.get("host_routes")),
        }
    )


def _network(data: dict[str, Any]) -> Network:
    return Network(
        **{
            **data,
            "subnets": tuple(_subnet(s) for s in data.get("subnets") or ()),
            "vxlan_peers": tuple(data.get("vxlan_peers") or ()),
        }
    )


def _router(data: dict[str, Any]) -> Router:
    return Router(
        **{
            **data,
            "interfaces": tuple(RouterInterface(**i) for i in data.get("interfaces") or ()),
            "floating_ips": tuple(FloatingIp(**f) for f in data.get("floating_ips") or ()),
        }
    )


def from_json(data: dict[str, Any]) -> HostNetworks:
    return HostNetworks(
        networks=tuple(_network(n) for n in data.get("networks") or ()),
        ports=tuple(_port(p) for p in data.get("ports") or ()),
        routers=tuple(_router(r) for r in data.get("routers") or ()),
        metadata_url=data.get("metadata_url", ""),
        extra=dict(data.get("extra") or {}),
    )
