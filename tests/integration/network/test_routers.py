"""Routers on real kernel objects: a guest on a tenant network behind a router reaches a
"test host" on the external network (SNAT: the test host sees the router's gateway address),
and a floating IP makes the guest reachable from outside until it leaves the desired state.
Everything lives in namespaces the lab makes (tag ``rt7…``) and is removed afterwards."""

from __future__ import annotations

import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from nubes.domain.netdesired import (
    FloatingIp,
    HostNetworks,
    Network,
    Port,
    Router,
    RouterInterface,
    Subnet,
)
from nubes.subp import subp
from tests.integration.network.builders import EGRESS, converged, network, port, tcp_in
from tests.integration.network.lab import Host, Lab, missing

pytestmark = pytest.mark.integration

#: answers each connection with the address it came from: what NAT made of the source
PEER_ECHO = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8)
print("ready", flush=True)
while True:
    c, peer = s.accept(); c.sendall(f"peer {peer[0]}".encode()); c.close()
"""
EXT_CIDR = "198.51.100.0/24"
OUTSIDE = "198.51.100.1"  # the test host, also the external subnet's gateway
GATEWAY = "198.51.100.10"
FLOATING = "198.51.100.20"
GUEST = "10.77.0.10"


class TaggedLab(Lab):
    """The data plane's lab under this file's own tag, so its names never meet theirs."""

    def __init__(self, tag: str) -> None:
        self.tag = f"{tag}{secrets.token_hex(2)}"
        self.root = Path("/tmp") / self.tag
        self.root.mkdir(mode=0o755)
        self.root.chmod(0o755)
        self.namespaces: list[str] = []
        self.hosts: list[Host] = []
        self.processes: list[subprocess.Popen[str]] = []
        self.links = 0


@pytest.fixture
def rlab() -> Iterator[Lab]:
    why = missing()
    if why:
        pytest.skip(why)
    made = TaggedLab("rt7")
    try:
        yield made
    finally:
        made.close()


@dataclass
class Scene:
    host: Host
    tenant: Network
    external: Network
    vm: Port
    guest: str
    outside: str
    ports: tuple[Port, ...]
    router: Router

    def desired(self, **router_changes: object) -> HostNetworks:
        wanted = replace(self.router, **router_changes)  # type: ignore[arg-type]
        return HostNetworks((self.tenant, self.external), (self.vm, *self.ports), (wanted,))


def build(lab: Lab) -> Scene:
    h1 = lab.host("h1", "192.0.2.1")
    tenant = network()
    ext_subnet = Subnet(str(uuid.uuid4()), EXT_CIDR, OUTSIDE, enable_dhcp=False)
    external = Network(str(uuid.uuid4()), "public", "local", subnets=(ext_subnet,), external=True)
    vm = port(tenant, GUEST, rules=(*EGRESS, tcp_in(8080)))
    iface = port(tenant, "10.77.0.1", "network:router_interface", port_security=False)
    gw = port(external, GATEWAY, "network:router_gateway", port_security=False)
    router_id = str(uuid.uuid4())
    router = Router(
        id=router_id,
        name="r1",
        external_network_id=external.id,
        gateway_port_id=gw.id,
        gateway_mac=gw.mac,
        gateway_address=GATEWAY,
        gateway_prefixlen=24,
        external_gateway_ip=OUTSIDE,
        interfaces=(
            RouterInterface(tenant.id, tenant.subnets[0].id, iface.id, iface.mac, "10.77.0.1", 24),
        ),
    )
    guest = lab.guest("g1", h1, vm, f"{GUEST}/24")
    subp(["ip", "-n", guest, "route", "add", "default", "via", "10.77.0.1"])
    # The test host: a namespace on the external bridge that is nobody's port.
    stranger = port(external, OUTSIDE, "")
    outside = lab.guest("out", h1, stranger, f"{OUTSIDE}/24")
    scene = Scene(h1, tenant, external, vm, guest, outside, (iface, gw), router)
    converged(lab, h1, scene.desired())
    subp(["ip", "-n", h1.ns, "link", "set", stranger.tap, "master", external.bridge, "up"])
    return scene


def peer_echo(lab: Lab, ns: str, listen: int) -> None:
    proc = lab.spawn(ns, [sys.executable, "-c", PEER_ECHO, str(listen)])
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"


def test_a_guest_behind_a_router_reaches_the_outside_as_the_gateway_address(rlab: Lab) -> None:
    scene = build(rlab)
    peer_echo(rlab, scene.outside, 9000)
    assert rlab.connect(scene.guest, OUTSIDE, 9000) == f"peer {GATEWAY}"

    # Without SNAT (and no floating IP) the private address may not leave.
    converged(rlab, scene.host, scene.desired(snat=False))
    assert rlab.connect(scene.guest, OUTSIDE, 9000, timeout=1.5) is None

    # Converging again with nothing changed changes nothing.
    assert converged(rlab, scene.host, scene.desired(snat=False)) == []


def test_a_floating_ip_reaches_the_guest_from_outside_until_it_is_removed(rlab: Lab) -> None:
    scene = build(rlab)
    rlab.responder(scene.guest, "g1", 8080)
    assert rlab.connect(scene.outside, FLOATING, 8080, timeout=1.5) is None

    fip = FloatingIp(str(uuid.uuid4()), FLOATING, GUEST, scene.vm.id)
    converged(rlab, scene.host, scene.desired(floating_ips=(fip,)))
    assert rlab.connect(scene.outside, FLOATING, 8080) == "hello from g1:8080"
    # 1:1: what the guest opens leaves as its floating address, not the gateway's.
    peer_echo(rlab, scene.outside, 9000)
    assert rlab.connect(scene.guest, OUTSIDE, 9000) == f"peer {FLOATING}"

    converged(rlab, scene.host, scene.desired(floating_ips=()))
    assert rlab.connect(scene.outside, FLOATING, 8080, timeout=1.5) is None
    assert rlab.connect(scene.guest, OUTSIDE, 9000) == f"peer {GATEWAY}"


def test_the_security_group_of_the_instance_still_decides_what_reaches_it(rlab: Lab) -> None:
    scene = build(rlab)
    rlab.responder(scene.guest, "g1", 8080, 8081)
    fip = FloatingIp(str(uuid.uuid4()), FLOATING, GUEST, scene.vm.id)
    converged(rlab, scene.host, scene.desired(floating_ips=(fip,)))
    assert rlab.connect(scene.outside, FLOATING, 8080) == "hello from g1:8080"
    assert rlab.connect(scene.outside, FLOATING, 8081, timeout=1.5) is None  # no rule for it


def test_removing_the_router_removes_its_namespace_and_legs(rlab: Lab) -> None:
    scene = build(rlab)
    netns = [n for n in rlab.lab_namespaces() if "-router-" in n]
    assert len(netns) == 1
    converged(rlab, scene.host, HostNetworks((scene.tenant, scene.external), (scene.vm,)))
    assert [n for n in rlab.lab_namespaces() if "-router-" in n] == []
    legs = [p.tap for p in scene.ports]
    assert not set(legs) & set(rlab.links_in(scene.host))
