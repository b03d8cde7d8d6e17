"""Real guests on the data plane: the tiny image booted by the QEMU driver (on a tap the agent
plugged) and by the LXC driver (on the veth LXC made), inside a lab host, gets its reserved
address from our dnsmasq and serves through its security group, and only there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from nubes.agent.hypervisors.base import Hypervisor, ImageKind
from nubes.agent.hypervisors.lxc import LxcHypervisor
from nubes.agent.hypervisors.lxc.layout import Layout
from nubes.agent.hypervisors.qemu import QemuHypervisor
from nubes.domain.netdesired import HostNetworks
from nubes.images.tiny import TinyImage
from nubes.subp import subp
from tests.integration.network.builders import EGRESS, converged, network, port, tcp_in
from tests.integration.network.lab import REPO, Lab
from tests.integration.test_qemu_driver import qemu_pids

pytestmark = pytest.mark.integration

DRIVERS: dict[str, type[Hypervisor]] = {"qemu": QemuHypervisor, "lxc": LxcHypervisor}


@pytest.fixture(params=sorted(DRIVERS))
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    why = DRIVERS[name].probe()
    if why is not None:
        pytest.skip(f"the {name} driver cannot run here: {why}")
    return name


# LXC looks for the bridge in /sys/class/net, so the runner needs a sysfs of the host's
# network namespace (nsenter keeps the machine's), and the cgroup tree under it (which
# ``ip netns exec`` would lose): a private mount namespace with both.
IN_HOST = """set -e
mkdir -p "$1"
mount --rbind /sys/fs/cgroup "$1"
mount -t sysfs sysfs /sys
mount --rbind "$1" /sys/fs/cgroup
shift
exec "$@"
"""


def in_host(lab: Lab, ns: str, argv: list[str]) -> list[str]:
    return [
        "nsenter", f"--net=/run/netns/{ns}",
        "unshare", "--mount", "--propagation", "slave",
        "sh", "-c", IN_HOST, "in-host", str(lab.root / "cgroup"), *argv,
    ]  # fmt: skip


def spec_for(kind: str, image: TinyImage, instance_id: str, nic: dict[str, object]) -> str:
    disk = kind == "qemu"
    return json.dumps(
        {
            "id": instance_id,
            "name": instance_id,
            "hostname": "vm10",
            "vcpus": 1,
            "ram_mb": 192 if disk else 96,
            "disk_gb": 1,
            "image_id": "tiny",
            "image_path": str(image.disk if disk else image.rootfs),
            "image_kind": str(ImageKind.disk if disk else ImageKind.rootfs),
            "image_format": "qcow2" if disk else "tar",
            "nic": nic,
        }
    )


@pytest.fixture
def guest_runner(lab: Lab) -> Iterator[list[tuple[subprocess.Popen[str], str, str]]]:
    """Runners started by a test: told to destroy their guest, then whatever is left of it
    is killed (QEMU by PID, LXC by name)."""
    runners: list[tuple[subprocess.Popen[str], str, str]] = []
    try:
        yield runners
    finally:
        for proc, kind, instance_id in runners:
            try:
                assert proc.stdin is not None
                proc.stdin.write("\n")
                proc.stdin.close()
                proc.wait(timeout=120)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()
            if kind == "qemu":
                for pid in qemu_pids(instance_id):
                    os.kill(pid, signal.SIGKILL)
            else:
                lxcpath = Layout(lab.root / "driver").lxcpath
                name = f"nubes-{instance_id}"
                subp(["lxc-stop", "-n", name, "-P", lxcpath, "-k"], check=False, timeout=60)


def test_a_real_guest_gets_its_address_and_serves_only_what_its_group_allows(
    lab: Lab,
    kind: str,
    tiny_image: TinyImage,
    guest_runner: list[tuple[subprocess.Popen[str], str, str]],
) -> None:
    h1 = lab.host("h1", "192.0.2.1")
    net = network()
    dhcp = port(net, "10.77.0.2", "network:dhcp")
    vm = port(net, "10.77.0.10", rules=(*EGRESS, tcp_in(80)))
    client = port(net, "10.77.0.20")
    client_ns = lab.guest("gc", h1, client, "10.77.0.20/24")
    converged(lab, h1, HostNetworks((net,), (dhcp, vm, client)))

    instance_id = f"dp5-{kind}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    nic = {"port_id": vm.id, "mac": vm.mac, "tap": vm.tap, "bridge": net.bridge, "mtu": net.mtu}
    runner_argv = [
        sys.executable, "-m", "tests.integration.network.guest_in_host",
        kind, str(lab.root / "driver"), spec_for(kind, tiny_image, instance_id, nic),
        str(h1.run_dir), json.dumps(h1.options()),
    ]  # fmt: skip
    argv = in_host(lab, h1.ns, runner_argv)
    runner = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    guest_runner.append((runner, kind, instance_id))
    assert runner.stdout is not None
    assert runner.stdout.readline().split() == ["ADDR", "eth0", "10.77.0.10/24"]

    fetch = "import urllib.request as u; print(u.urlopen('http://10.77.0.10/', timeout=5).read())"
    page = lab.run_in(client_ns, [sys.executable, "-c", fetch], timeout=30).stdout
    assert page.strip() not in ("", "b''")  # the guest's host name
    assert lab.connect(client_ns, "10.77.0.10", 7, timeout=1.5) is None  # echo: not allowed
