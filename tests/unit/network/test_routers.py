"""Routers on a pretend host: the NAT ruleset read for its meaning, and whole converge passes
(what a router's namespace gets, that a second pass changes nothing, that interfaces,
floating IPs and routers that leave the desired state go, and that a restart adopts)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from nubes.agent.network import agent as agent_module
from nubes.agent.network.agent import NetworkAgent, Options
from nubes.agent.network.routers import leg_inner, plan
from nubes.agent.network.runner import NetworkError
from nubes.domain.netdesired import (
    FloatingIp,
    HostNetworks,
    Network,
    Port,
    Router,
    RouterInterface,
    Subnet,
    bridge_name,
    netns_name,
    tap_name,
)
from tests.unit.network import samples
from tests.unit.network.fakehost import FakeHost

EXT = "e0e0e0e0-aaaa-4bbb-8ccc-0000000000e1"
EXT_SUBNET = "e5e5e5e5-1111-4222-8333-0000000000e1"
ROUTER = "40404040-5555-4666-8777-000000000001"
IFACE_PORT = "1f1f1f1f-5555-4666-8777-000000000001"
GW_PORT = "9a9a9a9a-5555-4666-8777-000000000001"
NETNS = netns_name("router", ROUTER, "nubes")
QR, QG = leg_inner(IFACE_PORT, False), leg_inner(GW_PORT, True)


class RouterHost(FakeHost):
    """The fake host, plus what router namespaces need: sysctl, routes and nftables run
    inside a namespace, and a namespace's removal taking its veths' bridge ends along."""

    def __init__(self, proc: Path) -> None:
        super().__init__(proc)
        self.forwarding: dict[str, str] = {}
        self.routes: dict[str, tuple[str, str]] = {}
        self.ns_tables: dict[str, str] = {}

    def _dispatch(self, argv: tuple[str, ...], input: str | None) -> tuple[int, str]:
        if argv[:3] == ("ip", "netns", "exec") and argv[4] in ("sysctl", "nft"):
            return self._inside(argv[3], argv[4:], input or "")
        if argv[:2] == ("ip", "-n") and argv[3:5] in (("-json", "route"), ("route", "replace")):
            return self._route(argv[2], argv[3:])
        if argv[:3] == ("ip", "netns", "del"):
            inner = set(self.netns.get(argv[3], {}))
            for name in [n for n, lk in self.links.items() if lk.info.get("peer") in inner]:
                del self.links[name]
            for key in [k for k in self.ns_tables if k == argv[3]]:
                del self.ns_tables[key]
        return super()._dispatch(argv, input)

    def _inside(self, ns: str, argv: tuple[str, ...], script: str) -> tuple[int, str]:
        assert ns in self.netns, f"no namespace {ns}"
        if argv[0] == "sysctl":
            if argv[1] == "-n":
                return 0, self.forwarding.get(ns, "0") + "\n"
            self.forwarding[ns] = argv[2].split("=", 1)[1]
            return 0, ""
        if argv[1] == "-t":
            return (0, self.ns_tables[ns]) if ns in self.ns_tables else (1, "No such file")
        self.ns_tables.pop(ns, None)
        found = re.search(r"^table ip \w+ \{\n.*?^\}$", script, re.S | re.M)
        if found:
            self.ns_tables[ns] = found.group(0)
        return 0, ""

    def _route(self, ns: str, args: tuple[str, ...]) -> tuple[int, str]:
        if args[0] == "-json":
            if ns not in self.routes:
                return 0, ""
            via, dev = self.routes[ns]
            return 0, json.dumps([{"dst": "default", "gateway": via, "dev": dev}])
        self.routes[ns] = (args[4], args[6])
        return 0, ""


def external_network() -> Network:
    subnet = Subnet(EXT_SUBNET, "203.0.113.0/24", "203.0.113.1", enable_dhcp=False)
    return Network(EXT, "public", "local", subnets=(subnet,), external=True)


def router(**changes: object) -> Router:
    base = Router(
        id=ROUTER,
        name="r1",
        external_network_id=EXT,
        gateway_port_id=GW_PORT,
        gateway_mac="fa:16:3e:00:0e:01",
        gateway_address="203.0.113.10",
        gateway_prefixlen=24,
        external_gateway_ip="203.0.113.1",
        interfaces=(
            RouterInterface(
                samples.NET, samples.SUBNET, IFACE_PORT, "fa:16:3e:00:00:01", "10.0.0.1", 24
            ),
        ),
        floating_ips=(FloatingIp("f1", "203.0.113.20", "10.0.0.10", samples.VM1),),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def router_ports(wanted: Router) -> tuple[Port, ...]:
    iface = [
        Port(
            i.port_id,
            i.network_id,
            i.mac,
            ((i.subnet_id, i.address),),
            "network:router_interface",
            ROUTER,
            port_security=False,
        )
        for i in wanted.interfaces
    ]
    gateway = Port(
        GW_PORT,
        EXT,
        "fa:16:3e:00:0e:01",
        ((EXT_SUBNET, "203.0.113.10"),),
        "network:router_gateway",
        ROUTER,
        port_security=False,
    )
    return (*iface, gateway)


def desired(*routers: Router) -> HostNetworks:
    ports = (samples.dhcp_port(), samples.vm_port())
    extra = router_ports(routers[0]) if routers else ()
    return HostNetworks(
        networks=(samples.network(), external_network()),
        ports=(*ports, *extra),
        routers=routers,
    )


def writes(host: RouterHost) -> list[tuple[str, ...]]:
    """Changing commands, less the reads that run through ``ip netns exec``."""
    reads = (("sysctl", "-n"), ("nft", "-t"))
    return [
        c
        for c in host.changing_commands()
        if c[:3] != ("ip", "netns", "exec") or c[4:6] not in reads
    ]


@dataclass
class Rig:
    host: RouterHost
    run_dir: Path

    def agent(self) -> NetworkAgent:
        options = Options.parse(self.run_dir, {"local_ip": "192.0.2.1"})
        return NetworkAgent(options, run=self.host, proc=self.host.proc, kill=self.host.kill)


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Rig:
    netfilter = tmp_path / "sys-net-bridge"
    netfilter.mkdir()
    monkeypatch.setattr(agent_module, "BRIDGE_NETFILTER", netfilter)
    return Rig(RouterHost(tmp_path / "proc"), tmp_path / "run")


# -- the NAT ruleset ------------------------------------------------------------------------


def nat_of(wanted: Router) -> str:
    networks = {samples.NET: samples.network(), EXT: external_network()}
    made = plan(wanted, networks, "nubes")
    assert made.nat is not None
    return made.nat.text


def rule_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if "nat to" in line]


def test_floating_ips_translate_one_to_one_and_come_before_the_routers_snat() -> None:
    lines = rule_lines(nat_of(router()))
    assert lines == [
        f'iifname "{QG}" ip daddr 203.0.113.20 dnat to 10.0.0.10',
        f'oifname "{QG}" ip saddr 10.0.0.10 snat to 203.0.113.20',
        f'oifname "{QG}" ip saddr 10.0.0.0/24 snat to 203.0.113.10',
    ]


def test_without_snat_only_floating_ips_are_translated_and_nothing_means_no_table() -> None:
    lines = rule_lines(nat_of(router(snat=False)))
    assert all("203.0.113.10" not in line for line in lines)
    assert len(lines) == 2
    networks = {samples.NET: samples.network(), EXT: external_network()}
    assert plan(router(snat=False, floating_ips=()), networks, "nubes").nat is None


def test_the_digest_follows_the_content() -> None:
    networks = {samples.NET: samples.network(), EXT: external_network()}
    one = plan(router(), networks, "nubes").nat
    two = plan(router(floating_ips=()), networks, "nubes").nat
    assert one is not None
    assert two is not None
    assert one.digest != two.digest
    assert f'comment "nubes sha256:{one.digest}"' in one.text


def test_a_gateway_on_a_tenant_network_or_a_missing_network_is_refused() -> None:
    tenant = replace(external_network(), external=False)
    with pytest.raises(NetworkError, match="not an external"):
        plan(router(), {samples.NET: samples.network(), EXT: tenant}, "nubes")
    with pytest.raises(NetworkError, match="not in the desired state"):
        plan(router(), {EXT: external_network()}, "nubes")


def test_a_floating_address_that_is_not_an_address_never_reaches_the_ruleset() -> None:
    bad = router(floating_ips=(FloatingIp("f1", "203.0.113.20; flush ruleset", "10.0.0.10", "p"),))
    with pytest.raises(ValueError):
        plan(bad, {samples.NET: samples.network(), EXT: external_network()}, "nubes")


# -- whole passes ---------------------------------------------------------------------------


def test_a_router_gets_its_namespace_legs_route_forwarding_and_nat(rig: Rig) -> None:
    report = rig.agent().converge(desired(router()))
    assert report.errors == []
    host = rig.host
    qr_outer, qg_outer = host.links[tap_name(IFACE_PORT)], host.links[tap_name(GW_PORT)]
    assert (qr_outer.master, qr_outer.alias) == (bridge_name(samples.NET), f"nubes:router:{ROUTER}")
    assert qg_outer.master == bridge_name(EXT)
    inside = host.netns[NETNS]
    assert (inside[QR].mac, inside[QR].addresses, inside[QR].up) == (
        "fa:16:3e:00:00:01",
        ["10.0.0.1/24"],
        True,
    )
    assert sorted(inside[QG].addresses) == ["203.0.113.10/24", "203.0.113.20/32"]
    assert host.routes[NETNS] == ("203.0.113.1", QG)
    assert host.forwarding[NETNS] == "1"
    assert "dnat to 10.0.0.10" in host.ns_tables[NETNS]

    host.commands.clear()
    second = rig.agent().converge(desired(router()))  # a restarted agent: adopts
    assert (second.changes, second.errors) == ([], [])
    assert writes(host) == []


def test_a_removed_floating_ip_loses_its_address_and_its_translation(rig: Rig) -> None:
    agent = rig.agent()
    agent.converge(desired(router()))
    report = agent.converge(desired(router(floating_ips=())))
    assert report.errors == []
    assert rig.host.netns[NETNS][QG].addresses == ["203.0.113.10/24"]
    assert "203.0.113.20" not in rig.host.ns_tables[NETNS]
    assert "snat to 203.0.113.10" in rig.host.ns_tables[NETNS]


def test_a_removed_interface_loses_its_leg_and_a_removed_router_everything(rig: Rig) -> None:
    agent = rig.agent()
    agent.converge(desired(router()))
    no_iface = router(interfaces=(), snat=False, floating_ips=())
    report = agent.converge(desired(no_iface))
    assert report.errors == []
    assert tap_name(IFACE_PORT) not in rig.host.links
    assert NETNS not in rig.host.ns_tables  # nothing to translate: no table

    report = agent.converge(desired())
    assert report.errors == []
    assert NETNS not in rig.host.netns
    assert not [
        n for n in rig.host.links if n.startswith("tap") and "router" in rig.host.links[n].alias
    ]
    agent.cleanup()
    assert rig.host.links == {}
    assert rig.host.netns == {}


def test_an_unknown_router_namespace_of_ours_goes_and_another_prefix_stays(rig: Rig) -> None:
    rig.host.netns["nubes-router-0123456789ab"] = {}
    rig.host.netns["other-router-0123456789ab"] = {}
    rig.agent().converge(desired(router()))
    assert "nubes-router-0123456789ab" not in rig.host.netns
    assert "other-router-0123456789ab" in rig.host.netns


def test_one_broken_router_does_not_stop_the_others(rig: Rig) -> None:
    broken = replace(
        router(), id="50505050-5555-4666-8777-000000000002", external_network_id="nowhere"
    )
    report = rig.agent().converge(desired(router(), broken))
    assert len(report.errors) == 1
    assert broken.id in report.errors[0]
    assert NETNS in rig.host.netns


def test_a_changed_gateway_router_moves_the_default_route(rig: Rig) -> None:
    agent = rig.agent()
    agent.converge(desired(router()))
    agent.converge(desired(router(external_gateway_ip="203.0.113.254")))
    assert rig.host.routes[NETNS] == ("203.0.113.254", QG)
