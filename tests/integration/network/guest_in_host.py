"""One real guest (QEMU or LXC, the tiny image) run inside a lab host's network namespace the
way the agent runs one: plug its NIC when the driver does not make its own, create, start,
then print the address its DHCP client reported on the console (``ADDR <ifname> <cidr>``, or
``TIMEOUT`` and the console). A line on stdin (or its end) destroys the guest and unplugs it.

    nsenter --net=/run/netns/HOST python -m tests.integration.network.guest_in_host \\
        KIND STATE_DIR SPEC_JSON RUN_DIR OPTIONS_JSON
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from nubes.agent.hypervisors.base import Hypervisor, ImageKind, InstanceSpec, Nic
from nubes.agent.hypervisors.lxc import LxcHypervisor
from nubes.agent.hypervisors.qemu import QemuHypervisor
from nubes.agent.network import NetworkAgent, Options
from nubes.images.tiny import ADDR_MARKER

BOOT_TIMEOUT = 120.0


def address_line(console: str) -> str | None:
    for line in console.splitlines():
        if line.startswith(ADDR_MARKER):
            return line
    return None


def main() -> int:
    kind, state, spec_json, run_dir, options = sys.argv[1:6]
    data = json.loads(spec_json)
    nic = Nic(**data.pop("nic"))
    spec = InstanceSpec(
        **{
            **data,
            "image_path": Path(data["image_path"]),
            "image_kind": ImageKind(data["image_kind"]),
        },
        nics=(nic,),
    )
    network = NetworkAgent(Options.parse(Path(run_dir), json.loads(options)))
    driver: Hypervisor = (
        QemuHypervisor(Path(state), vnc=False) if kind == "qemu" else LxcHypervisor(Path(state))
    )
    try:
        if not driver.makes_own_nics:
            network.plug(nic)
        driver.create(spec)
        driver.start(spec)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while (line := address_line(driver.console_log(spec.id, tail_bytes=1 << 20))) is None:
            if time.monotonic() > deadline:
                print("TIMEOUT", driver.console_log(spec.id)[-3000:].replace("\n", " | "))
                break
            time.sleep(0.2)
        else:
            print("ADDR", *line.split()[1:3])
        sys.stdout.flush()
        sys.stdin.readline()
    finally:
        driver.destroy(spec.id)
        if not driver.makes_own_nics:
            network.unplug(nic.tap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
