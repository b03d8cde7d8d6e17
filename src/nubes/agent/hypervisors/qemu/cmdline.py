"""QEMU's command line and the names of an instance's files: pure functions, no I/O.

Every name derives from the instance id, so a restarted agent finds what exists: the instance
directory ``<state_dir>/instances/<id>/`` and the process, named ``guest=nubes-<id>`` on its
command line (how :func:`is_instance_process` recognises it, PID reuse notwithstanding).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from nubes.agent.hypervisors.base import Nic

#: Ids become directory names and part of QEMU options: no separators, commas or dots first.
INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
QMP_SOCKET = "qmp.sock"  # relative to the instance directory: unix socket paths are short
VNC_HOST = "127.0.0.1"  # never anything but loopback
VNC_BASE_PORT = 5900


class Accel(StrEnum):
    kvm = "kvm"
    tcg = "tcg"


def valid_instance_id(instance_id: str) -> bool:
    return INSTANCE_ID.fullmatch(instance_id) is not None and ".." not in instance_id


def process_name(instance_id: str) -> str:
    return f"nubes-{instance_id}"


@dataclass(frozen=True)
class InstancePaths:
    """The files of one instance, all inside one directory that ``destroy`` removes whole."""

    root: Path

    @classmethod
    def of(cls, state_dir: Path, instance_id: str) -> InstancePaths:
        return cls(state_dir / "instances" / instance_id)

    @property
    def disk(self) -> Path:
        return self.root / "disk.qcow2"

    @property
    def spec(self) -> Path:
        """Written last by ``create``: its presence means the instance is complete."""
        return self.root / "instance.json"

    @property
    def qmp_socket(self) -> Path:
        return self.root / QMP_SOCKET

    @property
    def serial_log(self) -> Path:
        return self.root / "serial.log"

    @property
    def qemu_log(self) -> Path:
        """QEMU's own messages (stderr after it daemonized), truncated at each start."""
        return self.root / "qemu.log"

    @property
    def pidfile(self) -> Path:
        """Written by QEMU, removed by QEMU when it exits cleanly (not when killed)."""
        return self.root / "qemu.pid"

    @property
    def stop_marker(self) -> Path:
        """Present while nubes wants the instance down: a death then is no crash."""
        return self.root / "stopped-by-nubes"

    @property
    def vnc_display(self) -> Path:
        return self.root / "vnc-display"

    @property
    def config_drive(self) -> Path:
        """The ISO 9660 config drive (label config-2), when the instance has one."""
        return self.root / "config-drive.iso"


@dataclass(frozen=True)
class Machine:
    """What to launch: the parts of the spec and host choices the command line needs."""

    instance_id: str
    vcpus: int
    ram_mb: int
    accel: Accel
    vnc_display: int | None = None  # None: no display at all
    config_drive: Path | None = None  # an ISO, attached read-only
    nics: tuple[Nic, ...] = ()  # their taps exist (the agent plugs them before start)


def escape(value: str | Path) -> str:
    """A value inside a QEMU ``key=value,...`` option: commas are doubled."""
    return str(value).replace(",", ",,")


def build_argv(
    machine: Machine, paths: InstancePaths, *, binary: str = "qemu-system-x86_64"
) -> list[str]:
    """The command that launches ``machine``, paused (``-S``) and daemonized: QEMU's parent
    exits once the child is ready (QMP socket listening, pidfile written) or has failed, so the
    caller learns either way synchronously. Run it with the instance directory as the working
    directory (the QMP socket path is relative to it)."""
    if machine.vcpus < 1 or machine.ram_mb < 16:
        raise ValueError(f"implausible machine: {machine.vcpus} vCPUs, {machine.ram_mb} MiB")
    disk = {
        "driver": "qcow2",
        "node-name": "disk0",
        "discard": "unmap",
        "file": {"driver": "file", "filename": str(paths.disk)},
    }
    argv = [
        binary,
        "-name", f"guest={process_name(machine.instance_id)},debug-threads=on",
        "-machine", "q35",
        "-accel", str(machine.accel),
        "-cpu", "host" if machine.accel is Accel.kvm else "max",
        "-smp", str(machine.vcpus),
        "-m", f"{machine.ram_mb}M",
        "-nodefaults",
        "-no-user-config",
        "-blockdev", json.dumps(disk, separators=(",", ":")),
        "-device", "virtio-blk-pci,drive=disk0,bootindex=0",
        "-chardev", f"file,id=serial0,path={escape(paths.serial_log)},append=on",
        "-serial", "chardev:serial0",
        "-chardev", f"socket,id=qmp,path={QMP_SOCKET},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-nic", "none",
        "-pidfile", str(paths.pidfile),
        "-D", str(paths.qemu_log),
        "-msg", "timestamp=on",
    ]  # fmt: skip
    if machine.config_drive is not None:
        argv += config_drive_args(machine.config_drive)
    argv += nic_args(machine.nics)
    if machine.vnc_display is None:
        argv += ["-display", "none"]
    else:
        argv += ["-device", "VGA", "-vnc", f"{VNC_HOST}:{machine.vnc_display}"]
    return [*argv, "-S", "-daemonize"]


def nic_args(nics: Sequence[Nic]) -> list[str]:
    """virtio-net on each NIC's existing tap. ``script=no``: the agent has already put the tap
    on its bridge (QEMU never runs a helper as root); ``host_mtu`` tells the guest the
    network's MTU (a VXLAN network's is smaller than the usual 1500)."""
    argv: list[str] = []
    for index, nic in enumerate(nics):
        argv += [
            "-netdev", f"tap,id=net{index},ifname={escape(nic.tap)},script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=net{index},mac={escape(nic.mac)},host_mtu={int(nic.mtu)}",
        ]  # fmt: skip
    return argv


def config_drive_args(iso: Path) -> list[str]:
    """The config drive as a second, read-only virtio disk: the guest finds it by its label
    (cloud-init, the tiny guest), and virtio-blk needs no extra controller or driver, unlike a
    SATA or SCSI CD-ROM."""
    drive = {
        "driver": "raw",
        "node-name": "config0",
        "read-only": True,
        "file": {"driver": "file", "filename": str(iso), "read-only": True},
    }
    return [
        "-blockdev", json.dumps(drive, separators=(",", ":")),
        "-device", "virtio-blk-pci,drive=config0,serial=config-2",
    ]  # fmt: skip


def is_instance_process(argv: Sequence[str], instance_id: str) -> bool:
    """Whether a process's command line is this instance's QEMU (guards against PID reuse)."""
    wanted = f"guest={process_name(instance_id)}"
    for option, value in itertools.pairwise(argv):
        if option == "-name":
            return value.split(",", 1)[0] == wanted
    return False


def vnc_port(display: int) -> int:
    return VNC_BASE_PORT + display
