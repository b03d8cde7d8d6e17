"""The data plane on real kernel objects: hosts and guests are network namespaces made by
:mod:`.lab`, the agent runs as its own process inside a host namespace, and what is checked
is what a guest sees (a DHCP lease, a TCP greeting, nothing at all)."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from nubes.domain.netdesired import (
    HostNetworks,
    Network,
    Port,
    Rule,
    bridge_name,
    netns_name,
    tap_name,
    to_json,
)
from nubes.subp import subp
from tests.integration.network.builders import (
    CIDR,
    EGRESS,
    converged,
    network,
    port,
    tcp_in,
    two_hosts,
)
from tests.integration.network.lab import Lab

pytestmark = pytest.mark.integration


# -- (1) trusted DHCP -------------------------------------------------------------------------


def test_a_guest_gets_its_reserved_address_by_dhcp_and_an_unknown_mac_gets_nothing(
    lab: Lab,
) -> None:
    h1 = lab.host("h1", "192.0.2.1")
    net = network(subnets=(replace(network().subnets[0], dns_nameservers=("192.0.2.53",)),))
    dhcp, vm = port(net, "10.77.0.2", "network:dhcp"), port(net, "10.77.0.10")
    vm_ns = lab.guest("g1", h1, vm)
    converged(lab, h1, HostNetworks((net,), (dhcp, vm)))

    lease = lab.dhcp_lease(vm_ns)
    assert lease == {
        "ip": "10.77.0.10",
        "router": "10.77.0.1",
        "mtu": "1500",
        "serverid": "10.77.0.2",
    }

    # A device on the bridge that is no port of ours (so nothing filters it): dnsmasq only
    # answers the MACs it was given.
    stranger = port(net, "10.77.0.11")
    stranger_ns = lab.guest("g2", h1, stranger)
    subp(["ip", "-n", h1.ns, "link", "set", stranger.tap, "master", net.bridge, "up"])
    assert lab.dhcp_lease(stranger_ns, tries=2) is None

    # A new guest: the running dnsmasq (unprivileged by now) re-reads its hosts file on SIGHUP.
    [pid] = lab.dnsmasq_pids()
    newcomer = port(net, "10.77.0.12")
    newcomer_ns = lab.guest("g3", h1, newcomer)
    changes = converged(lab, h1, HostNetworks((net,), (dhcp, vm, newcomer)))
    assert f"dnsmasq {netns_name('dhcp', net.id, h1.prefix)}: reloaded pid {pid}" in changes
    lease = lab.dhcp_lease(newcomer_ns)
    assert lease is not None
    assert lease["ip"] == "10.77.0.12"
    assert lab.dnsmasq_pids() == [pid]


# -- (2) and (3): VXLAN between hosts, ingress rules applied live ------------------------------


def test_guests_on_two_hosts_talk_over_vxlan_and_ingress_opens_exactly_the_ruled_port(
    lab: Lab,
) -> None:
    h1, h2 = two_hosts(lab)
    net = network("vxlan")
    on_h1, on_h2 = replace(net, vxlan_peers=(h2.address,)), replace(net, vxlan_peers=(h1.address,))
    a = port(net, "10.77.0.10", rules=(*EGRESS, tcp_in(8001)))
    b = port(net, "10.77.0.11")
    ga = lab.guest("ga", h1, a, "10.77.0.10/24", mtu=net.mtu)
    gb = lab.guest("gb", h2, b, "10.77.0.11/24", mtu=net.mtu)
    converged(lab, h1, HostNetworks((on_h1,), (a,)))
    converged(lab, h2, HostNetworks((on_h2,), (b,)))
    lab.responder(ga, "a", 8001)
    lab.responder(gb, "b", 8001, 8002)

    assert lab.connect(gb, "10.77.0.10", 8001) == "hello from a:8001"
    assert lab.connect(ga, "10.77.0.11", 8001, timeout=1.5) is None  # b allows no ingress

    opened = replace(b, rules=(*EGRESS, tcp_in(8001)))
    changes = converged(lab, h2, HostNetworks((on_h2,), (opened,)))
    assert [c for c in changes if not c.startswith("applied nftables ruleset")] == []
    assert lab.connect(ga, "10.77.0.11", 8001) == "hello from b:8001"
    assert lab.connect(ga, "10.77.0.11", 8002, timeout=1.5) is None

    converged(lab, h2, HostNetworks((on_h2,), (b,)))
    assert lab.connect(ga, "10.77.0.11", 8001, timeout=1.5) is None


# -- (4) anti-spoofing ------------------------------------------------------------------------


def neighbour(ns: str, address: str, mac: str) -> None:
    """A static neighbour entry: the test then needs no ARP, so only the IP or MAC check can
    stop the packet (ARP spoofing is checked on its own)."""
    subp(["ip", "-n", ns, "neigh", "replace", address, "lladdr", mac, "dev", "eth0"])


def test_a_guest_sending_from_a_forged_address_or_mac_is_dropped(lab: Lab) -> None:
    h1 = lab.host("h1", "192.0.2.1")
    net = network()
    a = port(net, "10.77.0.10")
    b = port(net, "10.77.0.11", rules=(*EGRESS, tcp_in(8001)))
    ga = lab.guest("ga", h1, a, "10.77.0.10/24")
    gb = lab.guest("gb", h1, b, "10.77.0.11/24")
    converged(lab, h1, HostNetworks((net,), (a, b)))
    lab.responder(gb, "b", 8001)
    neighbour(ga, "10.77.0.11", b.mac)
    assert lab.connect(ga, "10.77.0.11", 8001) == "hello from b:8001"

    subp(["ip", "-n", ga, "addr", "add", "10.77.0.99/24", "dev", "eth0"])
    neighbour(gb, "10.77.0.99", a.mac)
    assert lab.connect(ga, "10.77.0.11", 8001, source="10.77.0.99", timeout=1.5) is None

    forged = "fa:16:3e:66:66:66"
    subp(["ip", "-n", ga, "link", "set", "eth0", "address", forged])  # flushes ga's neighbours
    neighbour(ga, "10.77.0.11", b.mac)
    neighbour(gb, "10.77.0.10", forged)
    assert lab.connect(ga, "10.77.0.11", 8001, timeout=1.5) is None


def test_a_guest_cannot_claim_another_guest_s_address_by_arp(lab: Lab) -> None:
    h1 = lab.host("h1", "192.0.2.1")
    net = network()
    a, b, c = (port(net, f"10.77.0.{n}") for n in (10, 11, 12))
    ga = lab.guest("ga", h1, a, "10.77.0.10/24")
    lab.guest("gb", h1, b, "10.77.0.11/24")
    gc = lab.guest("gc", h1, c, "10.77.0.12/24")
    converged(lab, h1, HostNetworks((net,), (a, b, c)))
    # c learns b's MAC (the ping itself is not let in: ARP is all this needs).
    lab.run_in(gc, ["busybox", "ping", "-c", "1", "-W", "1", "10.77.0.11"], check=False)

    # ``a`` takes b's address and announces it (unsolicited ARP, which updates neighbours).
    subp(["ip", "-n", ga, "addr", "add", "10.77.0.11/32", "dev", "eth0"])
    lab.run_in(
        ga, ["busybox", "arping", "-U", "-c", "3", "-I", "eth0", "-s", "10.77.0.11", "10.77.0.11"]
    )
    out = subp(["ip", "-n", gc, "-json", "neigh", "show", "10.77.0.11"]).stdout
    assert [entry["lladdr"] for entry in json.loads(out)] == [b.mac]


def test_egress_rules_decide_what_a_guest_may_start(lab: Lab) -> None:
    h1 = lab.host("h1", "192.0.2.1")
    net = network()
    a = port(net, "10.77.0.10", rules=())  # no security group rule at all
    b = port(net, "10.77.0.11", rules=(*EGRESS, tcp_in(8001), tcp_in(8002)))
    ga = lab.guest("ga", h1, a, "10.77.0.10/24")
    gb = lab.guest("gb", h1, b, "10.77.0.11/24")
    converged(lab, h1, HostNetworks((net,), (a, b)))
    lab.responder(gb, "b", 8001, 8002)
    assert lab.connect(ga, "10.77.0.11", 8001, timeout=1.5) is None

    only_8001 = Rule("egress", protocol="tcp", port_min=8001, port_max=8001, remote=(CIDR,))
    converged(lab, h1, HostNetworks((net,), (replace(a, rules=(only_8001,)), b)))
    assert lab.connect(ga, "10.77.0.11", 8001) == "hello from b:8001"
    assert lab.connect(ga, "10.77.0.11", 8002, timeout=1.5) is None


# -- (5) a rogue DHCP server --------------------------------------------------------------------


def test_a_rogue_dhcp_server_in_a_guest_is_not_heard_by_the_others(lab: Lab) -> None:
    h1 = lab.host("h1", "192.0.2.1")
    net = network(subnets=(replace(network().subnets[0], enable_dhcp=False),))
    # The rogue's owner opened DHCP in its security group: only anti-spoofing stops it.
    rogue = port(net, "10.77.0.20", rules=(*EGRESS, Rule("ingress", protocol="udp")))
    victim = port(net, "10.77.0.21")
    rogue_ns = lab.guest("gr", h1, rogue, "10.77.0.20/24")
    victim_ns = lab.guest("gv", h1, victim)
    conf = lab.root / "udhcpd.conf"
    conf.write_text(
        f"start 10.77.0.100\nend 10.77.0.150\ninterface eth0\n"
        f"lease_file {lab.root}/udhcpd.leases\npidfile {lab.root}/udhcpd.pid\n"
    )
    (lab.root / "udhcpd.leases").touch()
    lab.spawn(rogue_ns, ["busybox", "udhcpd", "-f", str(conf)])

    converged(lab, h1, HostNetworks((net,), (rogue, victim)))
    assert lab.dhcp_lease(victim_ns, tries=3) is None

    # Without port security on the rogue's port, the same server is heard: the test can fail.
    converged(lab, h1, HostNetworks((net,), (replace(rogue, port_security=False), victim)))
    lease = lab.dhcp_lease(victim_ns, tries=3)
    assert lease is not None
    assert lease["serverid"] == "10.77.0.20"


# -- (6) idempotence and removal ------------------------------------------------------------------


def test_converging_twice_changes_nothing_and_an_empty_state_removes_everything(lab: Lab) -> None:
    h1 = lab.host("h1", "192.0.2.1")
    lab.wire(h1, lab.host("h2", "192.0.2.2"))
    net = replace(network("vxlan"), vxlan_peers=("192.0.2.2",))
    dhcp, vm = port(net, "10.77.0.2", "network:dhcp"), port(net, "10.77.0.10")
    lab.guest("g1", h1, vm)
    desired = HostNetworks((net,), (dhcp, vm))
    assert converged(lab, h1, desired) != []
    assert converged(lab, h1, desired) == []
    assert len(lab.dnsmasq_pids()) == 1

    converged(lab, h1, HostNetworks())
    names = set(lab.links_in(h1))
    assert not [n for n in names if n.startswith(("nbr-", "nvx-", "nvl-"))]
    assert tap_name(dhcp.id) not in names
    assert tap_name(vm.id) in names  # the guest's own device (LXC's) is not ours to remove
    assert [ns for ns in lab.lab_namespaces() if "-dhcp-" in ns] == []
    assert lab.dnsmasq_pids() == []
    assert lab.nft_tables(h1) == []
    assert not (h1.run_dir / "dhcp").exists()


# -- (7) an agent killed and started again ------------------------------------------------------

AGENT = """
import json, sys, threading
from pathlib import Path
from nubes.agent.network import NetworkAgent, Options
from nubes.domain.netdesired import from_json
agent = NetworkAgent(Options.parse(Path(sys.argv[1]), json.loads(sys.argv[2])))
report = agent.converge(from_json(json.loads(sys.argv[3])))
print(json.dumps(report.errors), flush=True)
threading.Event().wait()
"""


def test_a_restarted_agent_adopts_the_running_dnsmasq(lab: Lab) -> None:
    h1 = lab.host("h1", "192.0.2.1")
    net = network()
    dhcp, vm = port(net, "10.77.0.2", "network:dhcp"), port(net, "10.77.0.10")
    vm_ns = lab.guest("g1", h1, vm)
    desired = HostNetworks((net,), (dhcp, vm))
    agent = lab.spawn_agent(
        h1, AGENT, str(h1.run_dir), json.dumps(h1.options()), json.dumps(to_json(desired))
    )
    assert agent.stdout is not None
    assert agent.stdout.readline().strip() == "[]"
    [pid] = lab.dnsmasq_pids()
    os.kill(agent.pid, signal.SIGKILL)  # nsenter exec'd Python: this is the agent itself
    agent.wait(timeout=10)

    assert converged(lab, h1, desired) == []
    assert lab.dnsmasq_pids() == [pid]
    assert Path(f"/proc/{pid}").exists()
    lease = lab.dhcp_lease(vm_ns)
    assert lease is not None
    assert lease["ip"] == "10.77.0.10"


# -- flat and VLAN networks over a dedicated uplink ---------------------------------------------


def uplinked_guests(lab: Lab, kind: str) -> tuple[Lab, str, str, Network, Port, Port]:
    h1, h2 = two_hosts(lab)
    up1, up2 = lab.wire(h1, h2, addresses=False)
    net = network(kind, physical_network="physnet1")
    a = port(net, "10.77.0.10", rules=(*EGRESS, tcp_in(8001)))
    b = port(net, "10.77.0.11", rules=(*EGRESS, tcp_in(8001)))
    ga = lab.guest("ga", h1, a, "10.77.0.10/24")
    gb = lab.guest("gb", h2, b, "10.77.0.11/24")
    converged(lab, h1, HostNetworks((net,), (a,)), physical_networks={"physnet1": up1})
    converged(lab, h2, HostNetworks((net,), (b,)), physical_networks={"physnet1": up2})
    return lab, ga, gb, net, a, b


def test_a_flat_network_joins_hosts_through_their_uplinks(lab: Lab) -> None:
    _, ga, gb, net, _, _ = uplinked_guests(lab, "flat")
    lab.responder(gb, "b", 8001)
    assert lab.connect(ga, "10.77.0.11", 8001) == "hello from b:8001"
    assert lab.links_in(lab.hosts[0])["l2a"]["master"] == bridge_name(net.id)


def vlan_support(lab: Lab) -> str | None:
    """Why this kernel cannot make 802.1Q devices (tried for real), or None."""
    ns = f"{lab.tag}-vlanprobe"
    subp(["ip", "netns", "add", ns])
    try:
        subp(["ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        made = subp(
            [
                "ip",
                "-n",
                ns,
                "link",
                "add",
                "link",
                "p0",
                "name",
                "p0.7",
                "type",
                "vlan",
                "id",
                "7",
            ],
            check=False,
        )
    finally:
        subp(["ip", "netns", "del", ns], check=False)
    if made.returncode != 0:
        return f"this kernel has no 802.1Q VLAN support (the 8021q module): {made.stderr.strip()}"
    return None


def test_a_vlan_network_joins_hosts_through_tagged_uplinks(lab: Lab) -> None:
    why = vlan_support(lab)
    if why:
        pytest.skip(why)
    _, ga, gb, _, _, _ = uplinked_guests(lab, "vlan")
    lab.responder(gb, "b", 8001)
    assert lab.connect(ga, "10.77.0.11", 8001) == "hello from b:8001"


# -- taps for QEMU ---------------------------------------------------------------------------

PLUG = """
import json, sys
from pathlib import Path
from nubes.agent.hypervisors.base import Nic
from nubes.agent.network import NetworkAgent, Options
agent = NetworkAgent(Options.parse(Path(sys.argv[1]), json.loads(sys.argv[2])))
nic = Nic(**json.loads(sys.argv[3]))
agent.plug(nic)
agent.plug(nic)
print("plugged", flush=True)
"""


def test_plug_makes_a_persistent_tap_on_the_bridge_and_unplug_removes_it(lab: Lab) -> None:
    h1 = lab.host("h1", "192.0.2.1")
    net = network()
    vm = port(net, "10.77.0.10")
    converged(lab, h1, HostNetworks((net,), (vm,)))
    nic = {"port_id": vm.id, "mac": vm.mac, "tap": vm.tap, "bridge": net.bridge, "mtu": 1400}
    args = [str(h1.run_dir), json.dumps(h1.options()), json.dumps(nic)]
    plugger = lab.spawn_agent(h1, PLUG, *args)
    assert plugger.wait(timeout=60) == 0
    tap = lab.links_in(h1)[vm.tap]
    assert tap["linkinfo"]["info_kind"] == "tun"
    assert tap["linkinfo"]["info_data"]["persist"] is True
    assert (tap["master"], tap["mtu"], "UP" in tap["flags"]) == (net.bridge, 1400, True)

    # The port goes away: the next pass removes the tap nubes made.
    converged(lab, h1, HostNetworks((net,), ()))
    assert vm.tap not in lab.links_in(h1)
