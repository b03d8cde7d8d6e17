"""Network namespaces the agent owns (a DHCP server's, per network) and the veth that joins
one to its network's bridge: the bridge end is named after the DHCP port's tap, the end inside
carries the port's MAC and addresses."""

from __future__ import annotations

import contextlib
import ipaddress
import json
from typing import Any

from nubes.agent.network.links import Links
from nubes.agent.network.runner import NetworkError, Run, run_json
from nubes.domain.netdesired import Network, Port


def inner_name(tap: str) -> str:
    """The namespace end of a DHCP port's veth (``tapXXXX`` → ``ns-XXXX``)."""
    return "ns-" + tap.removeprefix("tap")


def list_namespaces(run: Run) -> set[str]:
    return {str(entry["name"]) for entry in run_json(run, ["ip", "-json", "netns", "list"])}


def ensure_namespace(run: Run, name: str, changes: list[str]) -> None:
    if name not in list_namespaces(run):
        run(["ip", "netns", "add", name])
        changes.append(f"created namespace {name}")
        run(["ip", "-n", name, "link", "set", "dev", "lo", "up"])


def delete_namespace(run: Run, name: str, changes: list[str]) -> None:
    run(["ip", "netns", "del", name], ok_codes=(0, 1))
    changes.append(f"removed namespace {name}")


def namespace_pids(run: Run, name: str) -> list[int]:
    out = run(["ip", "netns", "pids", name], check=False).stdout
    return [int(word) for word in out.split() if word.isdigit()]


def port_addresses(network: Network, port: Port) -> set[str]:
    """``address/prefixlen`` for each fixed IP of ``port`` on one of the network's subnets."""
    prefixes = {s.id: ipaddress.ip_network(s.cidr, strict=False).prefixlen for s in network.subnets}
    return {
        f"{ipaddress.ip_address(address)}/{prefixes[subnet_id]}"
        for subnet_id, address in port.fixed_ips
        if subnet_id in prefixes
    }


def ensure_dhcp_port(
    run: Run, links: Links, netns: str, network: Network, port: Port, owner: str
) -> str:
    """The veth between the bridge and the namespace, the inner end configured; returns the
    inner end's name (dnsmasq listens there)."""
    inner = inner_name(port.tap)
    present = _inner_link(run, netns, inner)
    if links.get(port.tap) is not None and present is None:
        links.delete(port.tap)  # half a pair (the namespace was recreated): start over
    if links.get(port.tap) is None:
        run([
            "ip", "link", "add", "name", port.tap, "mtu", str(network.mtu), "type", "veth",
            "peer", "name", inner, "mtu", str(network.mtu), "netns", netns,
        ])  # fmt: skip
        with contextlib.ExitStack() as undo:
            undo.callback(run, ["ip", "link", "del", "dev", port.tap], ok_codes=(0, 1))
            run(["ip", "link", "set", "dev", port.tap, "alias", owner])
            undo.pop_all()
        links.refresh()
        links.changes.append(f"created veth {port.tap} to {netns}")
        present = _inner_link(run, netns, inner)
    if present is None:
        raise NetworkError(f"veth end {inner} did not appear in {netns}")
    links.ensure_state(port.tap, mtu=network.mtu, master=network.bridge, owner=owner)
    _configure_inner(run, netns, inner, network, port, present, links.changes)
    return inner


def _inner_link(run: Run, netns: str, inner: str) -> dict[str, Any] | None:
    """The inner end with its addresses, or None (no such device, or no such namespace)."""
    result = run(["ip", "-n", netns, "-json", "address", "show", "dev", inner], check=False)
    if result.returncode != 0:
        return None
    try:
        data = json.loads(result.stdout or "[]")
    except ValueError as exc:
        raise NetworkError(f"ip address show in {netns}: not JSON: {result.stdout!r}") from exc
    return dict(data[0]) if data else None


def _configure_inner(
    run: Run,
    netns: str,
    inner: str,
    network: Network,
    port: Port,
    present: dict[str, Any],
    changes: list[str],
) -> None:
    args: list[str] = []
    if str(present.get("address", "")).lower() != port.mac.lower():
        args += ["address", port.mac.lower()]
    if present.get("mtu") != network.mtu:
        args += ["mtu", str(network.mtu)]
    if "UP" not in (present.get("flags") or ()):
        args += ["up"]
    if args:
        run(["ip", "-n", netns, "link", "set", "dev", inner, *args])
        changes.append(f"{netns} {inner}: set {' '.join(args)}")
    have = {
        f"{a['local']}/{a['prefixlen']}"
        for a in present.get("addr_info") or ()
        if a.get("scope") == "global"
    }
    wanted = port_addresses(network, port)
    for address in sorted(wanted - have):
        extra = ["nodad"] if ":" in address else []
        run(["ip", "-n", netns, "address", "add", address, "dev", inner, *extra])
        changes.append(f"{netns} {inner}: added {address}")
    for address in sorted(have - wanted):
        run(["ip", "-n", netns, "address", "del", address, "dev", inner])
        changes.append(f"{netns} {inner}: removed {address}")
