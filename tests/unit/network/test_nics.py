"""Instances' NICs from the desired state to the drivers: the names the reconciler derives,
when it plugs and unplugs taps, what QEMU and LXC are told, what the fake records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nubes.agent.hypervisors.base import InstanceSpec, Nic
from nubes.agent.hypervisors.fake import FakeHypervisor
from nubes.agent.hypervisors.lxc import config
from nubes.agent.hypervisors.lxc.config import CgroupVersion, ContainerConfig, InvalidConfig
from nubes.agent.hypervisors.qemu.cmdline import Accel, InstancePaths, Machine, build_argv
from nubes.agent.network import NetworkError
from nubes.agent.reconcile import Reconciler, parse_networks
from nubes.domain.netdesired import HostNetworks, bridge_name, tap_name

NIC = Nic("port-1", "fa:16:3e:00:00:10", "tapport1", "nbr-net1", 1450)
SECOND = Nic("port-2", "fa:16:3e:00:00:11", "tapport2", "nbr-net2", 1500)


# -- QEMU --------------------------------------------------------------------------------------


def test_qemu_opens_each_nic_s_tap_without_scripts_and_tells_the_guest_its_mac_and_mtu() -> None:
    machine = Machine("i-1", 1, 128, Accel.tcg, nics=(NIC, SECOND))
    argv = build_argv(machine, InstancePaths(Path("/var/lib/nubes/qemu/instances/i-1")))
    netdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-netdev"]
    devices = [
        argv[i + 1] for i, a in enumerate(argv) if a == "-device" and "netdev" in argv[i + 1]
    ]
    assert netdevs == [
        "tap,id=net0,ifname=tapport1,script=no,downscript=no",
        "tap,id=net1,ifname=tapport2,script=no,downscript=no",
    ]
    assert devices == [
        "virtio-net-pci,netdev=net0,mac=fa:16:3e:00:00:10,host_mtu=1450",
        "virtio-net-pci,netdev=net1,mac=fa:16:3e:00:00:11,host_mtu=1500",
    ]


def test_qemu_without_nics_has_no_netdev() -> None:
    argv = build_argv(Machine("i-1", 1, 128, Accel.tcg), InstancePaths(Path("/x/i-1")))
    assert "-netdev" not in argv


# -- LXC ---------------------------------------------------------------------------------------


def lxc_config(*nics: Nic) -> ContainerConfig:
    root = Path("/var/lib/nubes/lxc/containers/nubes-i1")
    return ContainerConfig(
        name="nubes-i1",
        hostname="web-1",
        rootfs_lower=Path("/var/lib/nubes/lxc/images/img/rootfs"),
        rootfs_upper=root / "upper",
        console_log=root / "console.log",
        lxc_log=root / "lxc.log",
        ram_mb=256,
        vcpus=1,
        cgroup=CgroupVersion.v2,
        nics=nics,
    )


def test_lxc_makes_a_veth_per_nic_named_after_the_tap_on_the_bridge() -> None:
    text = config.render(lxc_config(NIC, SECOND))
    lines = [line for line in text.splitlines() if line.startswith("lxc.net.")]
    assert lines == [
        "lxc.net.0.type = veth",
        "lxc.net.0.veth.pair = tapport1",
        "lxc.net.0.link = nbr-net1",
        "lxc.net.0.name = eth0",
        "lxc.net.0.hwaddr = fa:16:3e:00:00:10",
        "lxc.net.0.mtu = 1450",
        "lxc.net.0.flags = up",
        "lxc.net.1.type = veth",
        "lxc.net.1.veth.pair = tapport2",
        "lxc.net.1.link = nbr-net2",
        "lxc.net.1.name = eth1",
        "lxc.net.1.hwaddr = fa:16:3e:00:00:11",
        "lxc.net.1.mtu = 1500",
        "lxc.net.1.flags = up",
    ]


def test_lxc_without_nics_keeps_loopback_only() -> None:
    assert "lxc.net.0.type = empty" in config.render(lxc_config()).splitlines()


@pytest.mark.parametrize(
    ("nic", "field_name"),
    [
        (Nic("p", "fa:16:3e:00:00:10", "tap1\nlxc.mount.entry = / x", "nbr-1"), "tap"),
        (Nic("p", "fa:16:3e:00:00:10", "tap1", "a-bridge-name-too-long"), "bridge"),
        (Nic("p", "fa:16:3e:00:00:1", "tap1", "nbr-1"), "MAC"),
        (Nic("p", "fa:16:3e:00:00:10", "tap1", "nbr-1", mtu=10), "MTU"),
    ],
)
def test_lxc_refuses_a_nic_that_would_inject_configuration(nic: Nic, field_name: str) -> None:
    with pytest.raises(InvalidConfig, match=field_name):
        config.render(lxc_config(nic))


# -- the reconciler ----------------------------------------------------------------------------


@dataclass
class Recorder:
    """Stands in for the network agent and the controller: records what it was asked."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail_plug: bool = False

    def converge(self, desired: HostNetworks) -> None:
        self.calls.append(("converge", desired))

    def plug(self, nic: Nic) -> None:
        if self.fail_plug:
            raise NetworkError("bridge nbr-x does not exist")
        self.calls.append(("plug", nic))

    def unplug(self, tap: str) -> None:
        self.calls.append(("unplug", tap))

    def report(self, instance_id: str, body: dict[str, Any]) -> bool:
        return True

    def path(self, image_id: str, kind: str, checksum: str) -> Path:
        return Path("/images/tiny.qcow2")


class TapDriver(FakeHypervisor):
    """A fake that, like QEMU, needs the agent to make its taps."""

    makes_own_nics = False

    def create(self, spec: InstanceSpec) -> None:
        self.seen.append(("create", spec.id))
        super().create(spec)

    def start(self, spec: InstanceSpec) -> None:
        self.seen.append(("start", spec.id))
        super().start(spec)

    seen: list[tuple[str, str]]


def item(state: str = "building", desired_power: str = "running") -> dict[str, Any]:
    return {
        "id": "i-1",
        "name": "vm",
        "hostname": "vm",
        "vcpus": 1,
        "ram_mb": 128,
        "disk_gb": 1,
        "state": state,
        "desired_power": desired_power,
        "image": {"id": "img", "kind": "disk", "checksum": "abc", "format": "qcow2"},
        "nics": [
            {"port_id": "0b8f-4c1e-port", "mac": "FA:16:3E:00:00:10", "network_id": "n-1"},
            {"port_id": "77aa-port", "mac": "fa:16:3e:00:00:11", "network_id": "n-2", "mtu": 1450},
        ],
    }


def reconciler(driver: FakeHypervisor, recorder: Recorder) -> Reconciler:
    return Reconciler(driver, recorder, recorder, workers=1, network=recorder)  # type: ignore[arg-type]


def test_desired_nics_reach_the_driver_with_the_network_agent_s_names(tmp_path: Path) -> None:
    driver, recorder = FakeHypervisor(tmp_path), Recorder()
    r = reconciler(driver, recorder)
    try:
        r.reconcile_all([item()], wait=True)
    finally:
        r.close()
    assert driver.nics("i-1") == (
        Nic("0b8f-4c1e-port", "fa:16:3e:00:00:10", tap_name("0b8f-4c1e-port"), bridge_name("n-1")),
        Nic("77aa-port", "fa:16:3e:00:00:11", tap_name("77aa-port"), bridge_name("n-2"), 1450),
    )
    assert [c for c, _ in recorder.calls] == []  # the fake makes its own NICs: no taps


def test_networks_converge_before_any_instance_and_taps_are_plugged_before_start(
    tmp_path: Path,
) -> None:
    driver, recorder = TapDriver(tmp_path), Recorder()
    driver.seen = []
    r = reconciler(driver, recorder)
    try:
        r.reconcile_all([item()], wait=True, networks=HostNetworks())
    finally:
        r.close()
    order = [c for c, _ in recorder.calls]
    assert order == ["converge", "plug", "plug"]
    assert [nic.tap for c, nic in recorder.calls if c == "plug"] == [
        tap_name("0b8f-4c1e-port"),
        tap_name("77aa-port"),
    ]
    assert driver.seen == [("create", "i-1"), ("start", "i-1")]


def test_a_tap_that_cannot_be_plugged_keeps_the_guest_from_starting(tmp_path: Path) -> None:
    driver, recorder = TapDriver(tmp_path), Recorder(fail_plug=True)
    driver.seen = []
    r = reconciler(driver, recorder)
    try:
        r.reconcile_all([item()], wait=True)
    finally:
        r.close()
    assert ("start", "i-1") not in driver.seen


def test_a_deleted_instance_s_taps_are_removed_after_it(tmp_path: Path) -> None:
    driver, recorder = TapDriver(tmp_path), Recorder()
    driver.seen = []
    r = reconciler(driver, recorder)
    try:
        r.reconcile_all([item()], wait=True)
        recorder.calls.clear()
        r.reconcile_all([item("running", "deleted")], wait=True)
    finally:
        r.close()
    assert recorder.calls == [
        ("unplug", tap_name("0b8f-4c1e-port")),
        ("unplug", tap_name("77aa-port")),
    ]
    assert driver.list_instances() == []


def test_without_networks_in_the_desired_state_the_host_s_networking_is_left_alone(
    tmp_path: Path,
) -> None:
    recorder = Recorder()
    r = reconciler(FakeHypervisor(tmp_path), recorder)
    try:
        r.reconcile_all([], wait=True, networks=parse_networks(None))
        r.reconcile_all([], wait=True, networks=parse_networks({"networks": [{"bogus": 1}]}))
    finally:
        r.close()
    assert recorder.calls == []


def test_bad_network_options_stop_the_agent_before_it_joins(tmp_path: Path) -> None:
    from nubes.agent.run import Agent, AgentError

    with pytest.raises(AgentError, match="--network-options: namespace_prefix"):
        Agent.start(
            tmp_path,
            url="http://controller.invalid:1",  # never contacted: the options fail first
            token="t",
            driver="fake",
            network_options={"namespace_prefix": "Bad-Prefix"},
        )
