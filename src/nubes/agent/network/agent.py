"""The network agent: converges this host's namespace to a :class:`HostNetworks`, level-
triggered and idempotent, and plugs instances' taps.

Each pass reads what exists, makes what is missing, fixes what differs and removes what is
ours but no longer desired (a deleted network leaves no bridge, VXLAN or VLAN device, tap,
namespace, dnsmasq, nftables rule or file). Order matters for safety: the firewall goes first,
so a port is filtered before its bridge exists; orphans go last. One network's failure is
reported and the others still converge. A restarted agent finds everything by name (devices,
namespaces: :mod:`nubes.domain.netdesired`), by alias (taps, see :mod:`.links`), by pid file
checked against ``/proc`` (dnsmasq), by directory (``<run_dir>/dhcp/<network>``) and by the
digest our nftables tables carry, so it adopts rather than rebuilds.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nubes.agent.network import dhcp, firewall, namespaces
from nubes.agent.network.dnsmasq import PROC, Dnsmasq, Kill, cmdline, is_ours
from nubes.agent.network.links import Links, alias, ensure_flood_peers
from nubes.agent.network.metadata import MetadataPaths, MetadataProxy, with_metadata_route
from nubes.agent.network.routers import Routers
from nubes.agent.network.routers import plan as routers_plan
from nubes.agent.network.runner import NetworkError, Run, host_run, run_json
from nubes.domain.netdesired import (
    HostNetworks,
    Network,
    Port,
    netns_name,
    vlan_name,
    vxlan_name,
)
from nubes.subp import SubpError

log = logging.getLogger("nubes.agent.network")

_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,15}$")
_RESOURCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
BRIDGE_NETFILTER = Path("/proc/sys/net/bridge")
DEFAULT_LEASE_SECONDS = 86400


class NicLike(Protocol):
    """What plugging needs of a NIC (the drivers' ``Nic`` has it; no import of drivers)."""

    @property
    def port_id(self) -> str: ...
    @property
    def tap(self) -> str: ...
    @property
    def bridge(self) -> str: ...
    @property
    def mtu(self) -> int: ...


@dataclass(frozen=True)
class Options:
    """The agent's network settings (``--network-options`` JSON)."""

    run_dir: Path
    #: namespaces are global on a machine: two agents on one machine need different prefixes
    namespace_prefix: str = "nubes"
    #: physical network name -> this host's uplink device, for flat and VLAN networks
    physical_networks: Mapping[str, str] = field(default_factory=dict)
    #: this host's management address (VXLAN source); None: the one routed toward ``toward``
    local_ip: str | None = None
    toward: str | None = None
    dhcp_lease_seconds: int = DEFAULT_LEASE_SECONDS
    #: the host credential the metadata proxies forward with (from the agent's identity,
    #: never from the options JSON, which may sit on a command line)
    host_credential: str = field(default="", repr=False)

    @classmethod
    def parse(cls, run_dir: Path, data: Mapping[str, Any] | None) -> Options:
        """Checked settings; ValueError names the option that is wrong."""
        data = dict(data or {})
        known = {"namespace_prefix", "physical_networks", "local_ip", "dhcp_lease_seconds"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown network options {unknown}; known: {sorted(known)}")
        prefix = str(data.get("namespace_prefix", "nubes"))
        if not _PREFIX.match(prefix):
            raise ValueError(
                f"namespace_prefix {prefix!r}: 1-16 lower-case letters and digits, a letter first"
            )
        mapping = data.get("physical_networks") or {}
        if not isinstance(mapping, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise ValueError('physical_networks must map names to devices: {"physnet1": "eth1"}')
        local_ip = data.get("local_ip")
        if local_ip is not None:
            try:
                local_ip = str(ipaddress.ip_address(str(local_ip)))
            except ValueError:
                raise ValueError(f"local_ip {local_ip!r} is not an IP address") from None
        lease = data.get("dhcp_lease_seconds", DEFAULT_LEASE_SECONDS)
        if not isinstance(lease, int) or isinstance(lease, bool) or lease < 120:
            raise ValueError(f"dhcp_lease_seconds must be a whole number >= 120, not {lease!r}")
        return cls(run_dir, prefix, dict(mapping), local_ip, None, lease)


@dataclass
class Report:
    """What one pass changed, and what it could not do (each entry names the object)."""

    changes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class NetworkAgent:
    def __init__(
        self, options: Options, run: Run = host_run, proc: Path = PROC, kill: Kill = os.kill
    ) -> None:
        self.options = options
        self.run = run
        self.proc = proc
        self.kill = kill
        self.prefix = options.namespace_prefix
        self._lock = threading.Lock()
        self._local_ip = options.local_ip

    # -- public --------------------------------------------------------------------------

    def converge(self, desired: HostNetworks) -> Report:
        report = Report()
        with self._lock:
            self._converge(desired, report)
        for error in report.errors:
            log.warning("network: %s", error)
        for change in report.changes:
            log.info("network: %s", change)
        return report

    def cleanup(self) -> Report:
        """Remove everything this agent made (an empty desired state)."""
        return self.converge(HostNetworks())

    def plug(self, nic: NicLike) -> None:
        """The tap a QEMU NIC opens: made persistent, on its bridge, up. Idempotent.
        Raises NetworkError (the bridge is missing, a command failed)."""
        owner = alias(self.prefix, "tap", nic.port_id)
        with self._lock, _as_network_error(f"tap {nic.tap}"):
            links = Links(self.run, [])
            if links.get(nic.tap) is None:
                links.make_tap(nic.tap, owner)
            links.ensure_state(nic.tap, mtu=nic.mtu, master=nic.bridge, owner=owner)

    def unplug(self, tap: str) -> None:
        """Remove a tap we made (a veth LXC made is LXC's to remove)."""
        with self._lock, _as_network_error(f"tap {tap}"):
            links = Links(self.run, [])
            link = links.get(tap)
            if link is not None and link.alias.startswith(f"{self.prefix}:"):
                links.delete(tap)

    # -- one pass ------------------------------------------------------------------------

    def _step(self, report: Report, what: str, fn: Callable[..., None], *args: Any) -> bool:
        try:
            fn(*args)
        except (NetworkError, SubpError, ValueError, OSError) as exc:
            report.errors.append(f"{what}: {exc}")
            return False
        return True

    def _converge(self, desired: HostNetworks, report: Report) -> None:
        changes = report.changes
        networks = [n for n in desired.networks if self._valid_id(report, "network", n.id)]
        ports = [p for p in desired.ports if self._valid_port(report, p)]
        routers = [r for r in desired.routers if self._valid_id(report, "router", r.id)]
        desired = HostNetworks(
            networks=tuple(networks),
            ports=tuple(ports),
            routers=tuple(routers),
            metadata_url=desired.metadata_url,
        )
        if not self._step(report, "firewall", self._ensure_firewall, desired, changes):
            return  # no bridge without its filtering
        try:
            links = Links(self.run, changes)
        except (NetworkError, SubpError) as exc:
            report.errors.append(f"links: {exc}")
            return
        for network in networks:
            self._step(report, f"network {network.id}", self._ensure_network, links, network)
        self._step(report, "ports", self._adopt_ports, links, desired)
        served: dict[str, str] = {}
        if desired.metadata_url and not self.options.host_credential:
            report.errors.append("metadata: no host credential given to the network agent")
        for network in networks:
            port = self._dhcp_port(desired, network)
            if port is None:
                continue
            served[network.id] = netns_name("dhcp", network.id, self.prefix)
            self._step(
                report, f"dhcp {network.id}", self._ensure_dhcp, links, network, port, desired
            )
        legs = self._converge_routers(report, links, desired)
        self._step(
            report, "metadata orphans", self._remove_metadata_orphans, links, desired, served
        )
        self._step(report, "orphans", self._remove_orphans, links, desired, served, legs)

    def _valid_id(self, report: Report, kind: str, resource_id: str) -> bool:
        if _RESOURCE_ID.match(resource_id) and ".." not in resource_id:
            return True
        report.errors.append(f"{kind} id {resource_id!r} is not usable as a name; skipped")
        return False

    def _valid_port(self, report: Report, port: Port) -> bool:
        """A port that cannot be filtered safely is left out whole: never plugged unfiltered."""
        if not self._valid_id(report, "port", port.id):
            return False
        if not dhcp.valid_mac(port.mac):
            report.errors.append(f"port {port.id}: invalid MAC address {port.mac!r}; skipped")
            return False
        return True

    # -- networks ------------------------------------------------------------------------

    def _ensure_network(self, links: Links, network: Network) -> None:
        owner = alias(self.prefix, "network", network.id)
        links.ensure_bridge(network.bridge, network.mtu, owner)
        if network.type == "local":
            return
        if network.type == "vxlan":
            vni = _segment(network, 1, 2**24 - 1)
            device = vxlan_name(network.id)
            links.ensure_vxlan(device, vni, self.local_ip(), network.mtu, network.bridge, owner)
            ensure_flood_peers(self.run, device, network.vxlan_peers, links.changes)
        elif network.type == "vlan":
            vid = _segment(network, 1, 4094)
            uplink = self._uplink(links, network)
            links.ensure_vlan(
                vlan_name(network.id), uplink, vid, network.mtu, network.bridge, owner
            )
        elif network.type == "flat":
            uplink = self._uplink(links, network)
            addresses = links.global_addresses(uplink)
            if addresses:
                raise NetworkError(
                    f"uplink {uplink} has addresses {addresses}: a flat network's uplink must be "
                    "dedicated (enslaving it would cut the host off)"
                )
            links.ensure_state(uplink, master=network.bridge)
        else:
            raise NetworkError(f"unknown network type {network.type!r}")

    def _uplink(self, links: Links, network: Network) -> str:
        physnet = network.physical_network or ""
        device = self.options.physical_networks.get(physnet)
        if device is None:
            raise NetworkError(
                f"physical network {physnet!r} is not mapped to a device on this host "
                f"(network option physical_networks: {dict(self.options.physical_networks)})"
            )
        if links.get(device) is None:
            raise NetworkError(f"uplink {device} of physical network {physnet!r} does not exist")
        return device

    def _uplinks(self, desired: HostNetworks) -> list[str]:
        names = []
        for network in desired.networks:
            if network.type == "vxlan":
                names.append(vxlan_name(network.id))
            elif network.type == "vlan":
                names.append(vlan_name(network.id))
            elif network.type == "flat":
                device = self.options.physical_networks.get(network.physical_network or "")
                if device:
                    names.append(device)
        return names

    def local_ip(self) -> str:
        """The VXLAN source address: configured, or the one routed toward the controller."""
        if self._local_ip is None:
            toward = self.options.toward
            if not toward:
                raise NetworkError("local_ip is not set and there is no controller to route to")
            target = socket.getaddrinfo(toward, None, socket.AF_INET)[0][4][0]
            routes = run_json(self.run, ["ip", "-json", "route", "get", str(target)])
            source = routes[0].get("prefsrc") if routes else None
            if not source:
                raise NetworkError(f"no source address routes toward {toward}; set local_ip")
            self._local_ip = str(source)
        return self._local_ip

    # -- ports ---------------------------------------------------------------------------

    def _adopt_ports(self, links: Links, desired: HostNetworks) -> None:
        """Existing taps and veths of compute ports go onto their bridge (after the bridge
        was re-made, or when a driver made the device itself)."""
        networks = {n.id: n for n in desired.networks}
        for port in desired.ports:
            network = networks.get(port.network_id)
            if network is None or not port.device_owner.startswith("compute"):
                continue
            if links.get(port.tap) is not None and links.get(network.bridge) is not None:
                links.ensure_state(port.tap, mtu=network.mtu, master=network.bridge)

    def _ensure_firewall(self, desired: HostNetworks, changes: list[str]) -> None:
        table = self.prefix
        if not desired.networks and not desired.ports:
            if self._installed_digests(table) != (None, None):
                self.run(["nft", "-f", "-"], input=firewall.replace_script(table, ""))
                changes.append(f"removed nftables tables bridge/inet {table}")
            return
        self._require_bridge_netfilter()
        ruleset = firewall.render(desired, table, self._uplinks(desired))
        for skipped in ruleset.skipped:
            log.warning("firewall: %s", skipped)
        if self._installed_digests(table) == (ruleset.digest, ruleset.digest):
            return
        self.run(["nft", "-f", "-"], input=firewall.replace_script(table, ruleset.text))
        changes.append(f"applied nftables ruleset {ruleset.digest[:12]}")

    def _installed_digests(self, table: str) -> tuple[str | None, str | None]:
        digests = []
        for family in ("bridge", "inet"):
            listing = self.run(["nft", "-t", "list", "table", family, table], check=False)
            ok = listing.returncode == 0
            digests.append(firewall.installed_digest(listing.stdout) if ok else None)
        return digests[0], digests[1]

    def _require_bridge_netfilter(self) -> None:
        """Security groups need br_netfilter (built in here; a module on Debian)."""
        if BRIDGE_NETFILTER.is_dir():
            return
        self.run(["modprobe", "br_netfilter"], check=False)
        if not BRIDGE_NETFILTER.is_dir():
            raise NetworkError(
                "br_netfilter is missing (modprobe br_netfilter failed): security groups "
                "cannot filter bridged traffic"
            )

    # -- DHCP ----------------------------------------------------------------------------

    @staticmethod
    def _dhcp_port(desired: HostNetworks, network: Network) -> Port | None:
        if not dhcp.dhcp_subnets(network):
            return None
        return next(
            (
                p
                for p in desired.ports
                if p.network_id == network.id and p.device_owner == "network:dhcp"
            ),
            None,
        )

    def _dhcp_paths(self, network_id: str) -> dhcp.DhcpPaths:
        return dhcp.DhcpPaths(self.options.run_dir / "dhcp" / network_id)

    def _ensure_dhcp(
        self, links: Links, network: Network, port: Port, desired: HostNetworks
    ) -> None:
        netns = netns_name("dhcp", network.id, self.prefix)
        namespaces.ensure_namespace(self.run, netns, links.changes)
        owner = alias(self.prefix, "dhcp", network.id)
        inner = namespaces.ensure_dhcp_port(self.run, links, netns, network, port, owner)
        paths = self._dhcp_paths(network.id)
        metadata = self._metadata_on(desired)
        described = with_metadata_route(network, port) if metadata else network
        lease = self.options.dhcp_lease_seconds
        files = dhcp.render(described, desired.ports, paths, inner, lease)
        Dnsmasq(self.run, paths, netns, self.proc, self.kill).ensure(files, links.changes)
        if metadata:
            proxy = MetadataProxy(
                self.run, self._metadata_paths(network.id), netns, self.proc, self.kill
            )
            proxy.ensure(network, desired, inner, self.options.host_credential, links.changes)

    # -- metadata ------------------------------------------------------------------------

    def _metadata_on(self, desired: HostNetworks) -> bool:
        return bool(desired.metadata_url and self.options.host_credential)

    def _metadata_paths(self, network_id: str) -> MetadataPaths:
        return MetadataPaths(self.options.run_dir / "metadata" / network_id)

    def _remove_metadata_orphans(
        self, links: Links, desired: HostNetworks, served: dict[str, str]
    ) -> None:
        """Proxies of networks no longer served (or of a metadata service switched off),
        before their namespaces go: the proxy holds a socket in one."""
        root = self.options.run_dir / "metadata"
        keep = set(served) if self._metadata_on(desired) else set()
        for directory in sorted(root.iterdir()) if root.is_dir() else ():
            if directory.name in keep:
                continue
            netns = netns_name("dhcp", directory.name, self.prefix)
            paths = MetadataPaths(directory)
            stopped = MetadataProxy(self.run, paths, netns, self.proc, self.kill).stop()
            if stopped is not None:
                links.changes.append(f"metadata {netns}: stopped pid {stopped}")
            shutil.rmtree(directory)
            links.changes.append(f"removed {directory}")
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()

    # -- orphans -------------------------------------------------------------------------

    # -- routers -------------------------------------------------------------------------

    def _converge_routers(self, report: Report, links: Links, desired: HostNetworks) -> set[str]:
        """Each router on its own (one's failure leaves the others converging), then the
        namespaces of routers no longer here. Returns the bridge ends of the routers' legs,
        which the orphan pass must keep."""
        networks = {n.id: n for n in desired.networks}
        routers = Routers(self.run, self.prefix)
        plans = []
        for router in desired.routers:
            try:
                plans.append(routers_plan(router, networks, self.prefix))
            except (NetworkError, ValueError) as exc:
                report.errors.append(f"router {router.id}: {exc}; skipped")
        for wanted in plans:
            self._step(report, f"router {wanted.router.id}", routers.ensure, links, wanted)
        self._step(report, "router orphans", routers.remove_orphans, links, plans)
        return {leg.outer for p in plans for leg in (*p.legs, *filter(None, [p.gateway]))}

    def _remove_orphans(
        self,
        links: Links,
        desired: HostNetworks,
        served: dict[str, str],
        keep: set[str] | None = None,
    ) -> None:
        root = self.options.run_dir / "dhcp"
        for directory in sorted(root.iterdir()) if root.is_dir() else ():
            if directory.name in served:
                continue
            netns = netns_name("dhcp", directory.name, self.prefix)
            stopped = Dnsmasq(
                self.run, dhcp.DhcpPaths(directory), netns, self.proc, self.kill
            ).stop()
            if stopped is not None:
                links.changes.append(f"dnsmasq {netns}: stopped pid {stopped}")
            shutil.rmtree(directory)
            links.changes.append(f"removed {directory}")
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        mine = f"{self.prefix}-dhcp-"
        for netns in sorted(namespaces.list_namespaces(self.run)):
            if netns.startswith(mine) and netns not in served.values():
                self._kill_leftover_dnsmasq(netns)
                namespaces.delete_namespace(self.run, netns, links.changes)
        wanted = {n.bridge for n in desired.networks} | set(self._uplinks(desired))
        wanted |= {p.tap for p in desired.ports if p.network_id in {n.id for n in desired.networks}}
        wanted |= keep or set()
        for link in sorted(links.owned(self.prefix), key=lambda lk: lk.kind == "bridge"):
            if link.name not in wanted:
                links.delete(link.name)

    def _kill_leftover_dnsmasq(self, netns: str) -> None:
        """A dnsmasq of ours in a namespace whose directory is gone (by /proc, never by name)."""
        root = self.options.run_dir / "dhcp"
        for pid in namespaces.namespace_pids(self.run, netns):
            argv = cmdline(pid, self.proc)
            conf = next((a.split("=", 1)[1] for a in argv if a.startswith("--conf-file=")), "")
            if conf and Path(conf).parent.parent == root:
                paths = dhcp.DhcpPaths(Path(conf).parent)
                if is_ours(pid, paths, self.proc):
                    Dnsmasq(self.run, paths, netns, self.proc, self.kill).stop(pid)


@contextlib.contextmanager
def _as_network_error(what: str) -> Iterator[None]:
    try:
        yield
    except SubpError as exc:
        raise NetworkError(f"{what}: {exc}") from exc


def _segment(network: Network, low: int, high: int) -> int:
    value = network.segmentation_id
    if value is None or not low <= int(value) <= high:
        raise NetworkError(
            f"{network.type} network needs a segmentation_id between {low} and {high}, "
            f"not {value!r}"
        )
    return int(value)
