"""Security groups and anti-spoofing as nftables: the whole ruleset of our two tables rendered
from the desired ports (pure), and applied in one ``nft -f`` transaction that replaces only
our tables (``table X {}; delete table X; table X {...}``), so a rule change is live at once,
there is no moment without rules, and nobody else's tables are touched.

Why two families. Stateful filtering (return traffic, "established") needs conntrack, and a
``bridge``-family table only has it with ``nf_conntrack_bridge``, which this kernel lacks
(``ct state`` there fails with EPROTO). What every kernel here and every stock Debian 12
kernel has is ``br_netfilter``: it passes bridged IP packets through the ``inet`` hooks, with
conntrack. It is switched on per bridge (``nf_call_iptables``), only on our bridges. But in
those hooks a bridged packet's interfaces are the bridge itself, not the ports, and nftables
has no ``physdev`` match. So:

- ``table bridge <t>`` sees the ports. Per compute port (by its tap): anti-spoofing in
  ``prerouting`` (only the port's MAC, its fixed IPs and allowed addresses, ARP included; no
  DHCP or DHCPv6 server replies, no router advertisements; only IPv4, ARP and IPv6 frames), and
  in ``forward`` it writes which port a frame came from and goes to into the packet mark
  (bits 12-23: source port index, bits 0-11: destination; bits 24-31 are left alone), cleared
  again in ``postrouting`` so the mark never leaves our bridges.
- ``table inet <t>`` decides with conntrack: per port an ``egress_`` chain (what it may send)
  and an ``ingress_`` chain (what may reach it), chosen by the mark. Each first lets return
  traffic and what basic operation needs (DHCP, IPv6 neighbour discovery) through, then the
  port's rules, then drops. Bridged flows get a conntrack zone per network (16 bits from the
  network id), so tenants' overlapping addresses do not share connection state.

A port with ``port_security`` off, DHCP and router ports get neither anti-spoofing nor
filtering. Every name and address written here is validated first: the ruleset is a program,
and a port name or address is never allowed to become syntax.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nubes.domain.netdesired import HostNetworks, Port, Rule

MARK_SOURCE_SHIFT = 12
MARK_INDEX_MASK = 0xFFF  # at most 4095 filtered ports per host
MARK_KEEP = 0xFF000000  # bits we never touch
MAX_PORTS = MARK_INDEX_MASK
ICMP_PROTOCOLS = {"icmp": ("icmp", "icmpv6"), "icmpv6": ("icmp", "icmpv6")}
PORT_PROTOCOLS = ("tcp", "udp", "sctp", "udplite", "dccp")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_COMMENT = re.compile(r'^\s*comment "nubes sha256:([0-9a-f]{64})"\s*$', re.MULTILINE)


class RulesetError(ValueError):
    """A desired value cannot be expressed safely (a bad name, MAC or address)."""


@dataclass(frozen=True)
class Ruleset:
    text: str  # both tables, ready for ``nft -f``
    digest: str
    #: rules left out because they could not be expressed (they open nothing)
    skipped: tuple[str, ...] = ()


@dataclass
class _Filtered:
    port: Port
    index: int
    v4: list[str] = field(default_factory=list)
    v6: list[str] = field(default_factory=list)


def filtered(port: Port) -> bool:
    return port.port_security and port.device_owner.startswith("compute")


def conntrack_zone(network_id: str) -> int:
    return int(hashlib.sha256(network_id.encode()).hexdigest()[:8], 16) % 65535 + 1


def _ifname(name: str) -> str:
    if not _IFNAME.match(name):
        raise RulesetError(f"unsafe interface name {name!r}")
    return f'"{name}"'


def _chain_suffix(tap: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", tap)


def _mac(mac: str) -> str:
    if not _MAC.match(mac.lower()):
        raise RulesetError(f"invalid MAC address {mac!r}")
    return mac.lower()


def link_local(mac: str) -> str:
    """The EUI-64 link-local address a guest derives from its MAC (RFC 4291)."""
    octets = [int(b, 16) for b in _mac(mac).split(":")]
    octets[0] ^= 0x02
    eui = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    groups = [f"{eui[i] << 8 | eui[i + 1]:x}" for i in range(0, 8, 2)]
    return str(ipaddress.IPv6Address("fe80::" + ":".join(groups)))


def _collapse(addresses: Iterable[str], version: int) -> list[str]:
    """Merged, so an interval set never gets overlapping elements (nft refuses those)."""
    nets = [ipaddress.ip_network(a, strict=False) for a in addresses]
    same = [n for n in nets if n.version == version]
    merged = ipaddress.collapse_addresses(same)  # type: ignore[type-var]
    return [str(n.network_address) if n.num_addresses == 1 else str(n) for n in merged]


def _set(items: Sequence[str]) -> str:
    """A value or an anonymous set of them."""
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _port_sources(port: Port, index: int) -> _Filtered:
    own = [address for _, address in port.fixed_ips] + list(port.allowed_addresses)
    return _Filtered(port, index, _collapse(own, 4), _collapse(own, 6))


# -- the bridge table: anti-spoofing and marks --------------------------------------------------


def spoof_chain(entry: _Filtered) -> list[str]:
    port, mac = entry.port, _mac(entry.port.mac)
    lines = [
        f"ether saddr != {mac} drop",
        "ether type != { ip, arp, ip6 } drop",
        f"arp saddr ether != {mac} drop",
        f"arp saddr ip != {_set(['0.0.0.0', *entry.v4])} drop",
        "udp sport 67 drop",  # a DHCP server in a guest
        "udp sport 547 drop",  # a DHCPv6 server in a guest
        "icmpv6 type { nd-router-advert, nd-redirect } drop",
        "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return",
    ]
    lines.append(f"ip saddr != {_set(entry.v4)} drop" if entry.v4 else "ether type ip drop")
    v6 = ["::", link_local(port.mac), *entry.v6]
    lines.append(f"ip6 saddr != {_set(v6)} drop")
    return lines


def bridge_table(table: str, entries: list[_Filtered], bridge_ports: Sequence[str]) -> list[str]:
    out = [f"table bridge {table} {{", "  comment DIGEST"]
    if bridge_ports:
        elements = ", ".join(bridge_ports)
        out += ["  set ports {", "    type ifname", f"    elements = {{ {elements} }}", "  }"]
    out += [
        "  chain prerouting {",
        "    type filter hook prerouting priority filter; policy accept;",
    ]
    if entries:
        jumps = ", ".join(
            f"{_ifname(e.port.tap)} : jump spoof_{_chain_suffix(e.port.tap)}" for e in entries
        )
        out.append(f"    iifname vmap {{ {jumps} }}")
    out += [
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
    ]
    if bridge_ports:
        keep_destination = MARK_KEEP | MARK_INDEX_MASK
        keep_source = MARK_KEEP | (MARK_INDEX_MASK << MARK_SOURCE_SHIFT)
        out += [
            f"    iifname @ports meta mark set meta mark & {keep_destination:#010x}",
            f"    oifname @ports meta mark set meta mark & {keep_source:#010x}",
        ]
    for e in entries:
        name = _ifname(e.port.tap)
        out += [
            f"    iifname {name} meta mark set meta mark | {e.index << MARK_SOURCE_SHIFT:#010x}",
            f"    oifname {name} meta mark set meta mark | {e.index:#010x}",
        ]
    out += [
        "  }",
        "  chain postrouting {",
        "    type filter hook postrouting priority filter; policy accept;",
    ]
    if bridge_ports:
        out.append(f"    oifname @ports meta mark set meta mark & {MARK_KEEP:#010x}")
    out.append("  }")
    for e in entries:
        out.append(f"  chain spoof_{_chain_suffix(e.port.tap)} {{")
        out += [f"    {line}" for line in spoof_chain(e)]
        out.append("  }")
    out.append("}")
    return out


# -- the inet table: security groups --------------------------------------------------------

INGRESS_BASICS = [
    "udp sport 67 udp dport 68 return",
    "udp sport 547 udp dport 546 return",
    "icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, "
    "mld-listener-query } return",
]
EGRESS_BASICS = [
    "udp sport 68 udp dport 67 return",
    "udp sport 546 udp dport 547 return",
    "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, "
    "mld-listener-report, mld2-listener-report } return",
]


def _protocol_match(rule: Rule, family: str) -> str:
    """The layer-4 part of a rule; raises RulesetError when it cannot be expressed."""
    proto = (rule.protocol or "").lower()
    if proto in ("", "any"):
        return ""
    if proto in ("icmp", "icmpv6", "ipv6-icmp"):
        name = "icmp" if family == "ip" else "icmpv6"
        parts = [f"meta l4proto {'icmp' if family == 'ip' else 'ipv6-icmp'}"]
        if rule.port_min is not None:
            parts.append(f"{name} type {_number(rule.port_min, 255)}")
            if rule.port_max is not None:
                parts.append(f"{name} code {_number(rule.port_max, 255)}")
        return " ".join(parts)
    if proto in PORT_PROTOCOLS:
        if rule.port_min is None and rule.port_max is None:
            return f"meta l4proto {proto}"
        low = _number(rule.port_min if rule.port_min is not None else 1, 65535)
        high = _number(rule.port_max if rule.port_max is not None else low, 65535)
        if high < low:
            raise RulesetError(f"port range {low}-{high} is empty")
        return f"{proto} dport {low}" if low == high else f"{proto} dport {low}-{high}"
    if proto.isdigit():
        return f"meta l4proto {_number(int(proto), 255)}"
    raise RulesetError(f"unknown protocol {rule.protocol!r}")


def _number(value: int, limit: int) -> int:
    if not 0 <= int(value) <= limit:
        raise RulesetError(f"{value} is not between 0 and {limit}")
    return int(value)


def rule_line(rule: Rule) -> str | None:
    """One security-group rule as an nft rule ending in ``return`` (allowed), or None when it
    can match nothing (an empty remote list, or no remote of its address family)."""
    family = "ip6" if rule.ethertype.lower() == "ipv6" else "ip"
    parts = [f"meta nfproto {'ipv6' if family == 'ip6' else 'ipv4'}"]
    if rule.remote is not None:
        remotes = _collapse(rule.remote, 6 if family == "ip6" else 4)
        if not remotes:
            return None
        side = "saddr" if rule.direction == "ingress" else "daddr"
        parts.append(f"{family} {side} {_set(remotes)}")
    l4 = _protocol_match(rule, family)
    if l4:
        parts.append(l4)
    return " ".join([*parts, "return"])


def filter_chain(entry: _Filtered, direction: str, skipped: list[str]) -> list[str]:
    lines = ["ct state established,related return"]
    lines += INGRESS_BASICS if direction == "ingress" else EGRESS_BASICS
    lines.append("ct state invalid drop")
    for rule in entry.port.rules:
        if rule.direction != direction:
            continue
        try:
            line = rule_line(rule)
        except (RulesetError, ValueError) as exc:
            skipped.append(f"port {entry.port.id}: {direction} rule {rule}: {exc}")
            continue
        if line is not None:
            lines.append(line)
    lines.append("drop")
    return lines


def inet_table(
    table: str, entries: list[_Filtered], bridges: dict[str, str], skipped: list[str]
) -> list[str]:
    out = [
        f"table inet {table} {{",
        "  comment DIGEST",
        "  chain zones {",
        "    type filter hook prerouting priority raw; policy accept;",
    ]
    out += [
        f"    iifname {_ifname(bridge)} ct zone set {conntrack_zone(network_id)}"
        for bridge, network_id in sorted(bridges.items())
    ]
    out += [
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        '    iifname != "nbr-*" return',
    ]
    if entries:
        egress = ", ".join(
            f"{e.index << MARK_SOURCE_SHIFT:#010x} : jump egress_{_chain_suffix(e.port.tap)}"
            for e in entries
        )
        ingress = ", ".join(
            f"{e.index:#010x} : jump ingress_{_chain_suffix(e.port.tap)}" for e in entries
        )
        source_mask = MARK_INDEX_MASK << MARK_SOURCE_SHIFT
        out += [
            f"    meta mark & {source_mask:#010x} vmap {{ {egress} }}",
            f"    meta mark & {MARK_INDEX_MASK:#010x} vmap {{ {ingress} }}",
        ]
    out.append("  }")
    for e in entries:
        for direction in ("egress", "ingress"):
            out.append(f"  chain {direction}_{_chain_suffix(e.port.tap)} {{")
            out += [f"    {line}" for line in filter_chain(e, direction, skipped)]
            out.append("  }")
    out.append("}")
    return out


def render(desired: HostNetworks, table: str, uplinks: Iterable[str] = ()) -> Ruleset:
    """Both tables for ``desired``; ``uplinks`` are the devices joining our bridges to the
    outside (VXLAN, VLAN, flat uplinks), whose frames must not carry stale mark bits either.
    Raises RulesetError for a port that cannot be expressed safely (a bad tap name or MAC):
    better no new ruleset than a wrong one."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", table):
        raise RulesetError(f"unsafe table name {table!r}")
    networks = {n.id: n for n in desired.networks}
    ports = sorted((p for p in desired.ports if filtered(p)), key=lambda p: p.id)
    if len(ports) > MAX_PORTS:
        raise RulesetError(f"{len(ports)} filtered ports; at most {MAX_PORTS} per host")
    entries = [_port_sources(p, i + 1) for i, p in enumerate(ports)]
    bridges = {n.bridge: n.id for n in desired.networks}
    bridge_ports = sorted(
        {_ifname(p.tap) for p in desired.ports if p.network_id in networks}
        | {_ifname(n) for n in uplinks}
    )
    skipped: list[str] = []
    body = "\n".join(
        bridge_table(table, entries, bridge_ports) + inet_table(table, entries, bridges, skipped)
    )
    digest = hashlib.sha256(body.encode()).hexdigest()
    text = body.replace("comment DIGEST", f'comment "nubes sha256:{digest}"') + "\n"
    return Ruleset(text, digest, tuple(skipped))


def installed_digest(listing: str) -> str | None:
    """The digest our table carries, from ``nft -t list table ...``."""
    found = _COMMENT.search(listing)
    return found.group(1) if found else None


def replace_script(table: str, text: str) -> str:
    """Create-then-delete makes the delete safe when the table is absent; all in one
    transaction with the new tables."""
    reset = "".join(
        f"table {family} {table} {{}}\ndelete table {family} {table}\n"
        for family in ("bridge", "inet")
    )
    return reset + text
