"""Routers placed on this host: one network namespace per router, a veth "leg" per interface
and one to the external network, and the router's NAT (SNAT for its subnets, 1:1 DNAT+SNAT
per floating IP) as an ``ip nat`` nftables table inside that namespace.

Why NAT lives in the router's namespace: every tenant may use the same private ranges, and a
namespace per router gives each its own routing table, its own conntrack and its own nftables,
so nothing in the host's namespace (the security groups' tables, the operator's firewall)
sees or has to know tenant addresses after translation. The host only bridges.

Names come from ids (:func:`leg_inner`, :func:`nubes.domain.netdesired.tap_name`), so a
restarted agent adopts what exists: the namespace by name, the bridge end of each leg by name
and by its alias ``<prefix>:router:<router id>``, the NAT table by the digest in its comment.
Router legs get no anti-spoofing or security groups (a router forwards other hosts' traffic);
the instance's own port still filters what reaches it. IPv4 only.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nubes.agent.network import namespaces
from nubes.agent.network.dhcp import valid_mac
from nubes.agent.network.links import Links, alias
from nubes.agent.network.runner import NetworkError, Run, run_json
from nubes.domain.netdesired import Network, Router, netns_name, tap_name

KIND = "router"
EXTERNAL_TYPES = ("flat", "local")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_COMMENT = re.compile(r'comment "nubes sha256:([0-9a-f]{64})"')


def leg_inner(port_id: str, gateway: bool) -> str:
    """The router's end of a leg: ``qg-…`` toward the external network, ``qr-…`` otherwise
    (Neutron's names, which operators already recognise)."""
    return ("qg-" if gateway else "qr-") + tap_name(port_id).removeprefix("tap")


@dataclass(frozen=True)
class Leg:
    """One veth of a router: ``outer`` on the network's bridge, ``inner`` in the namespace."""

    port_id: str
    outer: str
    inner: str
    bridge: str
    mtu: int
    mac: str
    #: ``address/prefixlen``; the gateway leg also carries each floating IP as a /32
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class RouterPlan:
    router: Router
    netns: str
    legs: tuple[Leg, ...]
    gateway: Leg | None
    default_via: str | None
    nat: NatRuleset | None


@dataclass(frozen=True)
class NatRuleset:
    text: str
    digest: str


# -- planning (pure) --------------------------------------------------------------------------


def plan(router: Router, networks: Mapping[str, Network], prefix: str) -> RouterPlan:
    """What the router's namespace must hold. NetworkError names what is unusable (a network
    missing from the desired state, a bad MAC or address); the whole router is then skipped
    rather than half-made."""
    by_port: dict[str, list[str]] = {}
    meta: dict[str, tuple[str, str]] = {}
    for iface in router.interfaces:
        address = ipaddress.ip_interface(f"{iface.address}/{iface.prefixlen}")
        if address.version != 4:
            continue
        by_port.setdefault(iface.port_id, []).append(str(address))
        meta[iface.port_id] = (iface.network_id, iface.mac)
    legs = [
        _leg(port_id, False, networks, *meta[port_id], tuple(sorted(addresses)))
        for port_id, addresses in sorted(by_port.items())
    ]
    gateway = _gateway_leg(router, networks)
    default_via = None
    if gateway is not None and router.external_gateway_ip:
        default_via = str(ipaddress.IPv4Address(router.external_gateway_ip))
    nat = render_nat(router, legs, gateway, prefix) if gateway is not None else None
    return RouterPlan(
        router, netns_name(KIND, router.id, prefix), tuple(legs), gateway, default_via, nat
    )


def _leg(
    port_id: str,
    gateway: bool,
    networks: Mapping[str, Network],
    network_id: str,
    mac: str,
    addresses: tuple[str, ...],
) -> Leg:
    network = networks.get(network_id)
    if network is None:
        raise NetworkError(f"port {port_id}: network {network_id} is not in the desired state")
    if not valid_mac(mac):
        raise NetworkError(f"port {port_id}: invalid MAC address {mac!r}")
    inner = leg_inner(port_id, gateway)
    return Leg(
        port_id, tap_name(port_id), inner, network.bridge, network.mtu, mac.lower(), addresses
    )


def _gateway_leg(router: Router, networks: Mapping[str, Network]) -> Leg | None:
    if not (router.external_network_id and router.gateway_port_id and router.gateway_address):
        return None
    network = networks.get(router.external_network_id)
    if network is not None and (not network.external or network.type not in EXTERNAL_TYPES):
        raise NetworkError(f"gateway network {network.id} is not an external flat or local network")
    own = ipaddress.IPv4Interface(f"{router.gateway_address}/{router.gateway_prefixlen or 32}")
    floating = sorted({f"{ipaddress.IPv4Address(f.address)}/32" for f in router.floating_ips})
    addresses = (str(own), *(a for a in floating if a != f"{own.ip}/32"))
    return _leg(
        router.gateway_port_id,
        True,
        networks,
        router.external_network_id,
        router.gateway_mac or "",
        addresses,
    )


def render_nat(router: Router, legs: Sequence[Leg], gateway: Leg, table: str) -> NatRuleset | None:
    """The router's ``ip nat`` table, or None when there is nothing to translate.

    Floating IPs come first: 1:1, DNAT on the way in through the gateway leg and SNAT on
    the way out of it, so an instance with one keeps its own public address both ways. Then,
    with ``snat``, everything else from the router's subnets leaves as the gateway address.
    Traffic between the router's own subnets is never translated (only ``oifname`` of the
    gateway leg matches)."""
    out_if = _quoted(gateway.inner)
    own = ipaddress.IPv4Interface(gateway.addresses[0]).ip
    dnat: list[str] = []
    snat: list[str] = []
    for fip in sorted(router.floating_ips, key=lambda f: f.address):
        public = ipaddress.IPv4Address(fip.address)
        private = ipaddress.IPv4Address(fip.fixed_address)
        dnat.append(f"    iifname {out_if} ip daddr {public} dnat to {private}")
        snat.append(f"    oifname {out_if} ip saddr {private} snat to {public}")
    subnets = sorted(
        {str(ipaddress.IPv4Interface(a).network) for leg in legs for a in leg.addresses}
    )
    if router.snat and subnets:
        sources = subnets[0] if len(subnets) == 1 else "{ " + ", ".join(subnets) + " }"
        snat.append(f"    oifname {out_if} ip saddr {sources} snat to {own}")
    if not dnat and not snat:
        return None
    body = [
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        *dnat,
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        *snat,
        "  }",
    ]
    digest = hashlib.sha256("\n".join(body).encode()).hexdigest()
    name = _table(table)
    text = "\n".join([f"table ip {name} {{", f'  comment "nubes sha256:{digest}"', *body, "}"])
    return NatRuleset(text + "\n", digest)


def _quoted(name: str) -> str:
    if not _IFNAME.match(name):
        raise NetworkError(f"unsafe interface name {name!r}")
    return f'"{name}"'


def _table(name: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", name):
        raise NetworkError(f"unsafe nftables table name {name!r}")
    return name


# -- converging ----------------------------------------------------------------------------


class Routers:
    """Converges router namespaces; every command goes through ``run``."""

    def __init__(self, run: Run, prefix: str) -> None:
        self.run = run
        self.prefix = prefix

    def owner(self, router_id: str) -> str:
        return alias(self.prefix, KIND, router_id)

    def ensure(self, links: Links, wanted: RouterPlan) -> None:
        changes = links.changes
        namespaces.ensure_namespace(self.run, wanted.netns, changes)
        self._ensure_forwarding(wanted.netns, changes)
        owner = self.owner(wanted.router.id)
        legs = [*wanted.legs, *([wanted.gateway] if wanted.gateway else [])]
        for leg in legs:
            ensure_leg(self.run, links, wanted.netns, leg, owner)
        self._remove_stale_legs(links, wanted.router.id, {leg.outer for leg in legs})
        if wanted.gateway is not None:
            self._ensure_default_route(wanted.netns, wanted.gateway.inner, wanted.default_via)
        self._ensure_nat(wanted.netns, wanted.nat, changes)

    def remove_orphans(self, links: Links, wanted: Sequence[RouterPlan]) -> None:
        """Namespaces of routers no longer here (their legs die with them), then any leg of
        ours whose router is gone (a namespace removed by hand leaves none, but be sure)."""
        keep = {p.netns for p in wanted}
        mine = f"{self.prefix}-{KIND}-"
        for netns in sorted(namespaces.list_namespaces(self.run)):
            if netns.startswith(mine) and netns not in keep:
                namespaces.delete_namespace(self.run, netns, links.changes)
        links.refresh()
        kept = {p.router.id for p in wanted}
        marker = f"{self.prefix}:{KIND}:"
        for link in list(links.by_name.values()):
            if link.alias.startswith(marker) and link.alias[len(marker) :] not in kept:
                links.delete(link.name)

    def _remove_stale_legs(self, links: Links, router_id: str, keep: set[str]) -> None:
        owner = self.owner(router_id)
        for link in list(links.by_name.values()):
            if link.alias == owner and link.name not in keep:
                links.delete(link.name)

    def _ensure_forwarding(self, netns: str, changes: list[str]) -> None:
        """Forwarding on inside the router only: the host's own setting is left alone."""
        now = self.run(["ip", "netns", "exec", netns, "sysctl", "-n", "net.ipv4.ip_forward"])
        if now.stdout.strip() != "1":
            self.run(["ip", "netns", "exec", netns, "sysctl", "-w", "net.ipv4.ip_forward=1"])
            changes.append(f"{netns}: forwarding on")

    def _ensure_default_route(self, netns: str, device: str, via: str | None) -> None:
        routes = run_json(self.run, ["ip", "-n", netns, "-json", "route", "show", "default"])
        have = [(r.get("gateway"), r.get("dev")) for r in routes]
        if via is None:
            if have:
                self.run(["ip", "-n", netns, "route", "del", "default"])
            return
        if have != [(via, device)]:
            self.run(["ip", "-n", netns, "route", "replace", "default", "via", via, "dev", device])

    def _ensure_nat(self, netns: str, nat: NatRuleset | None, changes: list[str]) -> None:
        table = _table(self.prefix)
        listing = self.run(
            ["ip", "netns", "exec", netns, "nft", "-t", "list", "table", "ip", table], check=False
        )
        found = _COMMENT.search(listing.stdout) if listing.returncode == 0 else None
        installed = found.group(1) if found else None
        if nat is not None and installed == nat.digest:
            return
        if nat is None and listing.returncode != 0:
            return
        reset = f"table ip {table} {{}}\ndelete table ip {table}\n"
        script = reset + (nat.text if nat is not None else "")
        self.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=script)
        what = f"applied NAT {nat.digest[:12]}" if nat is not None else "removed NAT"
        changes.append(f"{netns}: {what}")


def ensure_leg(run: Run, links: Links, netns: str, leg: Leg, owner: str) -> None:
    """The veth between a bridge and the router's namespace, both ends configured."""
    present = _inner_link(run, netns, leg.inner)
    if links.get(leg.outer) is not None and present is None:
        links.delete(leg.outer)  # half a pair (the namespace was re-made): start over
    if links.get(leg.outer) is None:
        mtu = str(leg.mtu)
        run([
            "ip", "link", "add", "name", leg.outer, "mtu", mtu, "type", "veth",
            "peer", "name", leg.inner, "mtu", mtu, "netns", netns,
        ])  # fmt: skip
        with contextlib.ExitStack() as undo:
            undo.callback(run, ["ip", "link", "del", "dev", leg.outer], ok_codes=(0, 1))
            run(["ip", "link", "set", "dev", leg.outer, "alias", owner])
            undo.pop_all()
        links.refresh()
        links.changes.append(f"created veth {leg.outer} to {netns}")
        present = _inner_link(run, netns, leg.inner)
    if present is None:
        raise NetworkError(f"veth end {leg.inner} did not appear in {netns}")
    links.ensure_state(leg.outer, mtu=leg.mtu, master=leg.bridge, owner=owner)
    _configure_inner(run, netns, leg, present, links.changes)


def _inner_link(run: Run, netns: str, name: str) -> dict[str, Any] | None:
    result = run(["ip", "-n", netns, "-json", "address", "show", "dev", name], check=False)
    if result.returncode != 0:
        return None
    try:
        data = json.loads(result.stdout or "[]")
    except ValueError as exc:
        raise NetworkError(f"ip address show in {netns}: not JSON: {result.stdout!r}") from exc
    return dict(data[0]) if data else None


def _configure_inner(
    run: Run, netns: str, leg: Leg, present: dict[str, Any], changes: list[str]
) -> None:
    args: list[str] = []
    if str(present.get("address", "")).lower() != leg.mac:
        args += ["address", leg.mac]
    if present.get("mtu") != leg.mtu:
        args += ["mtu", str(leg.mtu)]
    if "UP" not in (present.get("flags") or ()):
        args += ["up"]
    if args:
        run(["ip", "-n", netns, "link", "set", "dev", leg.inner, *args])
        changes.append(f"{netns} {leg.inner}: set {' '.join(args)}")
    have = {
        f"{a['local']}/{a['prefixlen']}"
        for a in present.get("addr_info") or ()
        if a.get("scope") == "global" and a.get("family", "inet") == "inet"
    }
    wanted = set(leg.addresses)
    for address in sorted(wanted - have):
        run(["ip", "-n", netns, "address", "add", address, "dev", leg.inner])
        changes.append(f"{netns} {leg.inner}: added {address}")
    for address in sorted(have - wanted):
        run(["ip", "-n", netns, "address", "del", address, "dev", leg.inner])
        changes.append(f"{netns} {leg.inner}: removed {address}")
