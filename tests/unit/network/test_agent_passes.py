"""Whole converge passes against a pretend host (:mod:`.fakehost`): what a first pass makes,
that a second changes nothing, that a restarted agent adopts instead of rebuilding, and that
what is no longer desired goes, and only what is ours."""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from nubes.agent.network import agent as agent_module
from nubes.agent.network.agent import NetworkAgent, Options
from nubes.agent.network.dhcp import DhcpPaths
from nubes.agent.network.namespaces import inner_name
from nubes.domain.netdesired import (
    HostNetworks,
    Network,
    Rule,
    bridge_name,
    netns_name,
    tap_name,
    vlan_name,
    vxlan_name,
)
from tests.unit.network import samples
from tests.unit.network.fakehost import FakeHost, FakeLink

BRIDGE = bridge_name(samples.NET)
VXLAN = vxlan_name(samples.NET)
NETNS = netns_name("dhcp", samples.NET, "nubes")


@dataclass
class Rig:
    host: FakeHost
    run_dir: Path

    def agent(self, **options: object) -> NetworkAgent:
        parsed = Options.parse(self.run_dir, {"local_ip": "192.0.2.1", **options})
        return NetworkAgent(parsed, run=self.host, proc=self.host.proc, kill=self.host.kill)

    @property
    def dhcp(self) -> DhcpPaths:
        return DhcpPaths(self.run_dir / "dhcp" / samples.NET)

    def dnsmasq_pid(self) -> int:
        return int(self.dhcp.pid.read_text())


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Rig:
    netfilter = tmp_path / "sys-net-bridge"
    netfilter.mkdir()
    monkeypatch.setattr(agent_module, "BRIDGE_NETFILTER", netfilter)
    return Rig(FakeHost(tmp_path / "proc"), tmp_path / "run")


def test_a_first_pass_builds_the_network_and_a_second_changes_nothing(rig: Rig) -> None:
    agent = rig.agent()
    first = agent.converge(samples.host())
    assert first.errors == []
    links = rig.host.links
    assert (links[BRIDGE].kind, links[BRIDGE].up, links[BRIDGE].mtu) == ("bridge", True, 1450)
    assert links[VXLAN].info == {"id": 4242, "local": "192.0.2.1", "port": 4789, "learning": False}
    assert links[VXLAN].master == BRIDGE
    assert rig.host.fdb[VXLAN] == {"192.0.2.2", "192.0.2.3"}
    dhcp_tap = tap_name(samples.DHCP_PORT)
    assert links[dhcp_tap].master == BRIDGE
    inner = rig.host.netns[NETNS][inner_name(dhcp_tap)]
    assert (inner.mac, inner.addresses, inner.up) == ("fa:16:3e:00:00:02", ["10.0.0.2/24"], True)
    assert rig.dhcp.hosts.read_text().count("\n") == 2
    assert set(rig.host.tables) == {"bridge nubes", "inet nubes"}

    rig.host.commands.clear()
    second = agent.converge(samples.host())
    assert (second.changes, second.errors) == ([], [])
    assert rig.host.changing_commands() == []


def test_a_restarted_agent_adopts_dnsmasq_and_the_ruleset(rig: Rig) -> None:
    rig.agent().converge(samples.host())
    pid = rig.dnsmasq_pid()
    rig.host.commands.clear()
    report = rig.agent().converge(samples.host())  # a new process: nothing in memory
    assert (report.changes, report.errors) == ([], [])
    assert rig.dnsmasq_pid() == pid
    assert rig.host.signals == []


def test_new_guest_rewrites_the_hosts_file_and_reloads_dnsmasq_without_restart(rig: Rig) -> None:
    agent = rig.agent()
    agent.converge(samples.host())
    pid = rig.dnsmasq_pid()
    third = samples.vm_port("c3c3c3c3-0000-4000-8000-000000000003", "10.0.0.12")
    report = agent.converge(replace(samples.host(), ports=(*samples.host().ports, third)))
    assert "fa:16:3e:00:00:12,10.0.0.12,vm12" in rig.dhcp.hosts.read_text()
    assert rig.host.signals == [(pid, signal.SIGHUP)]
    assert rig.dnsmasq_pid() == pid
    assert f"dnsmasq {NETNS}: reloaded pid {pid}" in report.changes


def test_a_changed_configuration_restarts_dnsmasq(rig: Rig) -> None:
    rig.agent().converge(samples.host())
    pid = rig.dnsmasq_pid()
    rig.agent(dhcp_lease_seconds=600).converge(samples.host())
    assert (pid, signal.SIGTERM) in rig.host.signals
    assert rig.dnsmasq_pid() != pid
    assert ",600\n" in rig.dhcp.conf.read_text()


def test_a_recycled_pid_is_never_signalled(rig: Rig) -> None:
    agent = rig.agent()
    agent.converge(samples.host())
    stranger = rig.host.add_process(["/usr/bin/sshd", "-D"])
    rig.dhcp.pid.write_text(f"{stranger}\n")  # dnsmasq died; its PID went to someone else
    report = agent.converge(samples.host())
    assert all(pid != stranger for pid, _ in rig.host.signals)
    assert rig.dnsmasq_pid() not in (stranger,)
    assert any("started" in change for change in report.changes)


def test_rule_changes_replace_the_ruleset_and_touch_nothing_else(rig: Rig) -> None:
    agent = rig.agent()
    agent.converge(samples.host())
    rig.host.commands.clear()
    http = Rule("ingress", protocol="tcp", port_min=80, port_max=80)
    vm = samples.vm_port(rules=(*samples.vm_port().rules, http))
    agent.converge(samples.host(samples.dhcp_port(), vm, samples.vm_port(samples.VM2, "10.0.0.11")))
    changing = rig.host.changing_commands()
    assert changing == [("nft", "-f", "-")]
    assert "tcp dport 80 return" in rig.host.tables["inet nubes"]


def test_vxlan_flooding_follows_the_peer_list(rig: Rig) -> None:
    agent = rig.agent()
    agent.converge(samples.host())
    moved = samples.network(vxlan_peers=("192.0.2.3", "192.0.2.4"))
    report = agent.converge(samples.host(*samples.host().ports, networks=(moved,)))
    assert rig.host.fdb[VXLAN] == {"192.0.2.3", "192.0.2.4"}
    assert f"{VXLAN}: no longer flood to 192.0.2.2" in report.changes


def test_an_empty_desired_state_removes_everything_ours_and_nothing_else(rig: Rig) -> None:
    agent = rig.agent()
    rig.host.links["br0"] = FakeLink("br0", "bridge")  # the host's own bridge
    rig.host.links["tap0abcdef123"] = FakeLink("tap0abcdef123", "tun")  # someone else's tap
    rig.host.links[tap_name(samples.VM1)] = FakeLink(tap_name(samples.VM1), "veth")  # LXC's
    rig.host.netns["other-dhcp-0123456789ab"] = {}  # another agent's namespace
    agent.converge(samples.host())
    agent.plug(_Nic(samples.VM2))
    pid = rig.dnsmasq_pid()

    report = agent.converge(HostNetworks())
    assert report.errors == []
    assert set(rig.host.links) == {"br0", "tap0abcdef123", tap_name(samples.VM1)}
    assert set(rig.host.netns) == {"other-dhcp-0123456789ab"}
    assert rig.host.tables == {}
    assert (pid, signal.SIGTERM) in rig.host.signals
    assert not (rig.run_dir / "dhcp").exists()


def test_a_deleted_network_goes_while_another_stays(rig: Rig) -> None:
    other = Network(id="0ther-net", name="red", type="local", mtu=1500)
    agent = rig.agent()
    agent.converge(samples.host(*samples.host().ports, networks=(samples.network(), other)))
    agent.converge(HostNetworks(networks=(other,)))
    assert set(rig.host.links) == {other.bridge}
    assert NETNS not in rig.host.netns


def test_one_broken_network_does_not_stop_the_others(rig: Rig) -> None:
    vlan = Network(id="vlan-net", name="v", type="vlan", segmentation_id=5, physical_network="p9")
    report = rig.agent().converge(
        samples.host(*samples.host().ports, networks=(vlan, samples.network()))
    )
    assert len(report.errors) == 1
    assert report.errors[0].startswith("network vlan-net: physical network 'p9' is not mapped")
    assert rig.host.links[VXLAN].up


def test_a_missing_8021q_is_named_in_the_error(rig: Rig) -> None:
    rig.host.links["eth1"] = FakeLink("eth1", "")
    rig.host.fail["ip link add link eth1"] = "Error: Unknown device type."
    vlan = Network(id="vlan-net", name="v", type="vlan", segmentation_id=5, physical_network="p1")
    report = rig.agent(physical_networks={"p1": "eth1"}).converge(HostNetworks(networks=(vlan,)))
    assert "8021q" in report.errors[0]
    assert vlan_name("vlan-net") not in rig.host.links


def test_a_flat_uplink_with_addresses_is_not_enslaved(rig: Rig) -> None:
    rig.host.links["eth1"] = FakeLink("eth1", "", addresses=["198.51.100.7/24"])
    flat = Network(id="flat-net", name="f", type="flat", physical_network="p1")
    report = rig.agent(physical_networks={"p1": "eth1"}).converge(HostNetworks(networks=(flat,)))
    assert "dedicated" in report.errors[0]
    assert rig.host.links["eth1"].master is None


def test_no_bridge_is_made_when_the_firewall_cannot_be_applied(rig: Rig) -> None:
    rig.host.fail["nft -f"] = "Error: Could not process rule"
    report = rig.agent().converge(samples.host())
    assert report.errors[0].startswith("firewall:")
    assert BRIDGE not in rig.host.links


def test_a_port_with_a_bad_mac_is_left_out_whole(rig: Rig) -> None:
    bad = samples.vm_port(mac="fa:16:3e:zz:00:10")
    report = rig.agent().converge(samples.host(samples.dhcp_port(), bad))
    assert report.errors == [
        f"port {samples.VM1}: invalid MAC address 'fa:16:3e:zz:00:10'; skipped"
    ]
    assert tap_name(samples.VM1) not in rig.host.tables["bridge nubes"]


@dataclass(frozen=True)
class _Nic:
    port_id: str
    mac: str = "fa:16:3e:00:00:11"
    mtu: int = 1450

    @property
    def tap(self) -> str:
        return tap_name(self.port_id)

    @property
    def bridge(self) -> str:
        return BRIDGE


def test_plug_makes_a_tap_on_its_bridge_once_and_unplug_removes_only_ours(rig: Rig) -> None:
    agent = rig.agent()
    agent.converge(samples.host())
    agent.plug(_Nic(samples.VM2))
    tap = rig.host.links[tap_name(samples.VM2)]
    assert (tap.kind, tap.master, tap.mtu, tap.up) == ("tun", BRIDGE, 1450, True)
    assert tap.alias == f"nubes:tap:{samples.VM2}"
    rig.host.commands.clear()
    agent.plug(_Nic(samples.VM2))
    assert rig.host.changing_commands() == []
    rig.host.links["tapforeign"] = FakeLink("tapforeign", "tun")
    agent.unplug("tapforeign")
    agent.unplug(tap_name(samples.VM2))
    assert "tapforeign" in rig.host.links
    assert tap_name(samples.VM2) not in rig.host.links


def test_an_existing_guest_device_is_put_on_its_bridge(rig: Rig) -> None:
    """LXC made the veth (or the bridge was re-made under a running guest)."""
    rig.host.links[tap_name(samples.VM1)] = FakeLink(tap_name(samples.VM1), "veth")
    rig.agent().converge(samples.host())
    veth = rig.host.links[tap_name(samples.VM1)]
    assert (veth.master, veth.mtu, veth.up, veth.alias) == (BRIDGE, 1450, True, "")


def test_options_are_checked_with_messages_that_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="namespace_prefix"):
        Options.parse(tmp_path, {"namespace_prefix": "a-b"})
    with pytest.raises(ValueError, match="physical_networks"):
        Options.parse(tmp_path, {"physical_networks": ["eth1"]})
    with pytest.raises(ValueError, match="unknown network options"):
        Options.parse(tmp_path, {"bridge_mappings": {}})
    with pytest.raises(ValueError, match="local_ip 'host1' is not an IP address"):
        Options.parse(tmp_path, {"local_ip": "host1"})
    with pytest.raises(ValueError, match="dhcp_lease_seconds"):
        Options.parse(tmp_path, {"dhcp_lease_seconds": "1h"})
