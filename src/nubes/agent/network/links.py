"""This namespace's network devices: one snapshot read with ``ip -json -details link show``
and the idempotent commands that bring one device to what it should be (bridge, VXLAN, VLAN,
a port of a bridge) or remove it.

Ownership: bridges, VXLAN and VLAN devices are ours by name (``nbr-``, ``nvx-``, ``nvl-``, see
:mod:`nubes.domain.netdesired`). Taps and veth ends are named ``tap…`` like other software's,
so everything nubes creates also carries an interface alias ``<prefix>:<kind>:<id>``; only a
device with our alias is ever removed as an orphan. (LXC makes its containers' veths itself:
they carry no alias and LXC removes them.)
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nubes.agent.network.runner import NetworkError, Run, run_json

OWNED_PREFIXES = ("nbr-", "nvx-", "nvl-")
VXLAN_PORT = 4789
FLOOD_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True)
class Link:
    name: str
    kind: str  # bridge, vxlan, vlan, tun, veth; empty for a physical NIC
    master: str | None
    mtu: int
    up: bool
    alias: str
    mac: str
    info: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Link:
        linkinfo = data.get("linkinfo") or {}
        return cls(
            name=str(data["ifname"]),
            kind=str(linkinfo.get("info_kind", "")),
            master=data.get("master"),
            mtu=int(data.get("mtu", 0)),
            up="UP" in (data.get("flags") or ()),
            alias=str(data.get("ifalias", "")),
            mac=str(data.get("address", "")),
            info=dict(linkinfo.get("info_data") or {}),
        )


def alias(prefix: str, kind: str, resource_id: str) -> str:
    return f"{prefix}:{kind}:{resource_id}"


class Links:
    """A snapshot of the links, kept current by the changes made through it."""

    def __init__(self, run: Run, changes: list[str]) -> None:
        self.run = run
        self.changes = changes
        self.by_name: dict[str, Link] = {}
        self.refresh()

    def refresh(self) -> None:
        data = run_json(self.run, ["ip", "-json", "-details", "link", "show"])
        self.by_name = {str(d["ifname"]): Link.from_json(d) for d in data}

    def get(self, name: str) -> Link | None:
        return self.by_name.get(name)

    def _changed(self, what: str, name: str) -> None:
        self.changes.append(what)
        data = run_json(self.run, ["ip", "-json", "-details", "link", "show", "dev", name])
        if data:
            self.by_name[name] = Link.from_json(data[0])
        else:
            self.by_name.pop(name, None)

    # -- making --------------------------------------------------------------------------

    def ensure_bridge(self, name: str, mtu: int, owner: str) -> None:
        """A bridge without STP (ports forward at once) whose IP traffic passes the inet
        hooks (per-bridge ``nf_call_iptables``: security groups need conntrack, and this
        leaves every other bridge on the host alone)."""
        link = self.get(name)
        if link is not None and link.kind != "bridge":
            self.delete(name)
            link = None
        if link is None:
            self.run([
                "ip", "link", "add", "name", name, "mtu", str(mtu), "type", "bridge",
                "stp_state", "0", "nf_call_iptables", "1", "nf_call_ip6tables", "1",
            ])  # fmt: skip
            self._changed(f"created bridge {name}", name)
            link = self.by_name[name]
        elif link.info.get("nf_call_iptables") != 1 or link.info.get("nf_call_ip6tables") != 1:
            self.run([
                "ip", "link", "set", "dev", name, "type", "bridge",
                "nf_call_iptables", "1", "nf_call_ip6tables", "1",
            ])  # fmt: skip
            self._changed(f"bridge {name}: security group hooks on", name)
        self.ensure_state(name, mtu=mtu, owner=owner)

    def ensure_vxlan(
        self, name: str, vni: int, local: str, mtu: int, bridge: str, owner: str
    ) -> None:
        link = self.get(name)
        wanted = {"id": vni, "local": local, "port": VXLAN_PORT, "learning": False}
        if link is not None and (
            link.kind != "vxlan" or any(link.info.get(k) != v for k, v in wanted.items())
        ):
            self.delete(name)  # VNI, address and port cannot change on a live device
            link = None
        if link is None:
            self.run([
                "ip", "link", "add", "name", name, "mtu", str(mtu), "type", "vxlan",
                "id", str(vni), "local", local, "dstport", str(VXLAN_PORT), "nolearning",
            ])  # fmt: skip
            self._changed(f"created vxlan {name} (VNI {vni}, local {local})", name)
        self.ensure_state(name, mtu=mtu, master=bridge, owner=owner)

    def ensure_vlan(
        self, name: str, parent: str, vid: int, mtu: int, bridge: str, owner: str
    ) -> None:
        if self.get(parent) is None:
            raise NetworkError(f"uplink {parent} for VLAN {vid} does not exist")
        link = self.get(name)
        if link is not None and (link.kind != "vlan" or link.info.get("id") != vid):
            self.delete(name)
            link = None
        if link is None:
            result = self.run(
                ["ip", "link", "add", "link", parent, "name", name, "mtu", str(mtu),
                 "type", "vlan", "id", str(vid)],
                check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise NetworkError(
                    f"cannot make VLAN {vid} on {parent}: {result.stderr.strip()} "
                    "(does this kernel have 802.1Q support, the 8021q module?)"
                )
            self._changed(f"created vlan {name} ({parent}.{vid})", name)
        self.ensure_state(name, mtu=mtu, master=bridge, owner=owner)

    def ensure_state(
        self,
        name: str,
        *,
        mtu: int | None = None,
        master: str | None = None,
        owner: str | None = None,
    ) -> None:
        """Bring one existing device to its MTU, bridge and alias, and up."""
        link = self.get(name)
        if link is None:
            raise NetworkError(f"device {name} does not exist")
        args: list[str] = []
        if owner is not None and link.alias != owner:
            args += ["alias", owner]
        if mtu is not None and link.mtu != mtu:
            args += ["mtu", str(mtu)]
        if master is not None and link.master != master:
            if self.get(master) is None:
                raise NetworkError(f"bridge {master} for {name} does not exist")
            args += ["master", master]
        if not link.up:
            args += ["up"]
        if args:
            self.run(["ip", "link", "set", "dev", name, *args])
            self._changed(f"{name}: set {' '.join(args)}", name)

    def delete(self, name: str) -> None:
        link = self.get(name)
        if link is None:
            return
        if link.kind == "tun":
            self.run(["ip", "tuntap", "del", "dev", name, "mode", link.info.get("type", "tap")])
        else:
            self.run(["ip", "link", "del", "dev", name], ok_codes=(0, 1))
        self.changes.append(f"removed {link.kind or 'device'} {name}")
        self.by_name.pop(name, None)
        if link.kind == "veth":  # its peer went with it
            self.refresh()

    def make_tap(self, name: str, owner: str) -> None:
        self.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"])
        with contextlib.ExitStack() as undo:
            undo.callback(self.run, ["ip", "tuntap", "del", "dev", name, "mode", "tap"])
            self.run(["ip", "link", "set", "dev", name, "alias", owner])
            undo.pop_all()
        self._changed(f"created tap {name}", name)

    # -- reading -------------------------------------------------------------------------

    def global_addresses(self, name: str) -> list[str]:
        data = run_json(self.run, ["ip", "-json", "address", "show", "dev", name])
        return [
            f"{a['local']}/{a['prefixlen']}"
            for d in data
            for a in d.get("addr_info") or ()
            if a.get("scope") == "global"
        ]

    def owned(self, prefix: str) -> list[Link]:
        """Every device nubes made: by name, or (taps, veth ends) by our alias."""
        marker = f"{prefix}:"
        return [
            link
            for link in self.by_name.values()
            if link.name.startswith(OWNED_PREFIXES) or link.alias.startswith(marker)
        ]


# -- VXLAN head-end replication -------------------------------------------------------------


def flood_peers(run: Run, device: str) -> set[str]:
    entries = run_json(run, ["bridge", "-json", "fdb", "show", "dev", device])
    return {str(e["dst"]) for e in entries if e.get("mac") == FLOOD_MAC and "dst" in e}


def ensure_flood_peers(run: Run, device: str, peers: Iterable[str], changes: list[str]) -> None:
    """BUM traffic goes to every peer (one all-zero FDB entry each): no multicast underlay."""
    wanted = {str(ipaddress.ip_address(p)) for p in peers}
    present = flood_peers(run, device)
    for peer in sorted(wanted - present):
        run(["bridge", "fdb", "append", FLOOD_MAC, "dev", device, "dst", peer])
        changes.append(f"{device}: flood to {peer}")
    for peer in sorted(present - wanted):
        run(["bridge", "fdb", "del", FLOOD_MAC, "dev", device, "dst", peer])
        changes.append(f"{device}: no longer flood to {peer}")
