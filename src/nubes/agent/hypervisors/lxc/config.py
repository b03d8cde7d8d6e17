"""Pure rendering of one container's LXC configuration (``lxc.container.conf(5)``).

Owns the text LXC reads: rootfs, limits, console, signals, network. Must never touch the
host: the driver detects the cgroup layout and passes it in, so every line here is decided
by the arguments and the constants below, and unit tests cover it without LXC.

Choices:

- Root file system: ``overlay:<lower>:<upper>``. LXC mounts the overlay itself, inside the
  container's private mount namespace, so the host has no mount to clean up; the image's
  rootfs is the read-only lower layer shared by every instance of that image.
- Memory: a hard limit of ``ram_mb`` MiB (cgroup v2 ``memory.max``, v1
  ``memory.limit_in_bytes``). Swap is not limited: ``memory.swap.max`` and
  ``memory.memsw.*`` only exist with swap accounting, and a missing file fails the start.
- CPU: a CFS bandwidth quota of ``vcpus`` CPUs' worth of time per 100 ms period (v2
  ``cpu.max = "<vcpus*100000> 100000"``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``),
  not a cpuset. A quota needs no host-wide bookkeeping of which CPU belongs to whom, allows
  over-commit like the qemu driver's vCPU threads do, and never fails when ``vcpus``
  exceeds the host's CPU count; the guest still sees every host CPU in ``nproc``.
- Config drive: its files, a directory on the host, bind-mounted read-only at cloud-init's
  seed directory for the ConfigDrive datasource (``/var/lib/cloud/seed/config_drive``),
  which cloud-init reads before looking for a ``config-2`` device. A loop-mounted ISO would
  need a loop device per container and a host mount to clean up; a bind mount needs neither,
  and lives and dies with the container's mount namespace.
- Network: one veth per NIC, LXC making the pair at start: the host end is named after the
  port's tap and put on the network's bridge (``lxc.net.N.link``), the guest end is
  ``ethN`` with the port's MAC and the network's MTU. The agent's nftables rules match
  that host end by name, so they are in place before the container starts. No NIC:
  ``lxc.net.0.type = empty`` (loopback only).
- Every value comes from validated input: a newline in a hostname would otherwise inject
  arbitrary LXC configuration (bind mounts of the host root, for a start).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from nubes.agent.hypervisors.base import Nic

# What the guest's init understands. busybox init: SIGUSR2 powers off, SIGTERM reboots
# (LXC's defaults, SIGPWR and SIGINT, are what systemd and sysvinit expect).
HALT_SIGNAL = "SIGUSR2"
REBOOT_SIGNAL = "SIGTERM"
INIT_CMD = "/sbin/init"
#: Relative to the container's root, as lxc.mount.entry wants it.
CONFIG_DRIVE_TARGET = "var/lib/cloud/seed/config_drive"

CPU_PERIOD_US = 100_000
# LXC rotates console.log to console.log.1 when it reaches this size: at most two files.
CONSOLE_LOG_SIZE = "1MB"
LOG_LEVEL = "WARN"

# LXC's distro baseline (device allow-list, capability drops, seccomp filter, /proc and
# /sys mounts), maintained and updated with the lxc package.
COMMON_CONF = Path("/usr/share/lxc/config/common.conf")
# Beyond common.conf: an immutable file in the upper layer would make destroy fail forever.
EXTRA_CAP_DROP = ("linux_immutable",)

_HOSTNAME = re.compile(
    r"^(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


class CgroupVersion(StrEnum):
    v1 = "v1"  # legacy or hybrid hierarchy: memory and cpu controllers on cgroup v1
    v2 = "v2"  # unified hierarchy


class InvalidConfig(ValueError):
    """An argument would produce a configuration LXC misreads or that is unsafe."""


@dataclass(frozen=True)
class ContainerConfig:
    name: str
    hostname: str
    rootfs_lower: Path
    rootfs_upper: Path
    console_log: Path
    lxc_log: Path
    ram_mb: int
    vcpus: int
    cgroup: CgroupVersion
    include: Path | None = COMMON_CONF
    config_drive: Path | None = None  # a directory of the config drive's files
    nics: tuple[Nic, ...] = ()


def _check_path(label: str, path: Path) -> str:
    text = str(path)
    if not path.is_absolute():
        raise InvalidConfig(f"{label} must be an absolute path, not {text!r}")
    # ':' separates overlay layers; a newline or a NUL would end the config line.
    if any(ch in text for ch in ":\n\r\0"):
        raise InvalidConfig(f"{label} may not contain ':' or control characters: {text!r}")
    return text


def validate(cfg: ContainerConfig) -> None:
    if not _NAME.match(cfg.name):
        raise InvalidConfig(f"container name {cfg.name!r} is not a safe LXC name")
    if not _HOSTNAME.match(cfg.hostname):
        raise InvalidConfig(
            f"hostname {cfg.hostname!r} is not a valid host name "
            "(letters, digits, '-' and '.', at most 64 characters)"
        )
    if cfg.ram_mb < 1:
        raise InvalidConfig(f"ram_mb must be at least 1, not {cfg.ram_mb}")
    if cfg.vcpus < 1:
        raise InvalidConfig(f"vcpus must be at least 1, not {cfg.vcpus}")
    for label, path in (
        ("rootfs lower", cfg.rootfs_lower),
        ("rootfs upper", cfg.rootfs_upper),
        ("console log", cfg.console_log),
        ("lxc log", cfg.lxc_log),
    ):
        _check_path(label, path)
    if cfg.include is not None:
        _check_path("include", cfg.include)
    if cfg.config_drive is not None:
        text = _check_path("config drive", cfg.config_drive)
        if any(ch.isspace() for ch in text):  # mount entries are split on white space
            raise InvalidConfig(f"config drive may not contain white space: {text!r}")
    for nic in cfg.nics:
        validate_nic(nic)


def validate_nic(nic: Nic) -> None:
    for label, name in (("tap", nic.tap), ("bridge", nic.bridge)):
        if not _IFNAME.match(name):
            raise InvalidConfig(
                f"NIC {label} {name!r} is not a device name (at most 15 of A-Z a-z 0-9 _ . -)"
            )
    if not _MAC.match(nic.mac):
        raise InvalidConfig(f"NIC MAC {nic.mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    if not 68 <= nic.mtu <= 65535:
        raise InvalidConfig(f"NIC MTU must be between 68 and 65535, not {nic.mtu}")


def nic_lines(nics: tuple[Nic, ...]) -> list[str]:
    if not nics:
        return ["# No network but loopback.", "lxc.net.0.type = empty"]
    lines = []
    for index, nic in enumerate(nics):
        key = f"lxc.net.{index}"
        lines += [
            f"{key}.type = veth",
            f"{key}.veth.pair = {nic.tap}",
            f"{key}.link = {nic.bridge}",
            f"{key}.name = eth{index}",
            f"{key}.hwaddr = {nic.mac.lower()}",
            f"{key}.mtu = {nic.mtu}",
            f"{key}.flags = up",
        ]
    return lines


def cgroup_lines(cgroup: CgroupVersion, ram_mb: int, vcpus: int) -> list[str]:
    memory = ram_mb * 1024 * 1024
    quota = vcpus * CPU_PERIOD_US
    if cgroup is CgroupVersion.v2:
        return [
            f"lxc.cgroup2.memory.max = {memory}",
            f"lxc.cgroup2.cpu.max = {quota} {CPU_PERIOD_US}",
        ]
    return [
        f"lxc.cgroup.memory.limit_in_bytes = {memory}",
        # The period first: the kernel checks the quota against the current period.
        f"lxc.cgroup.cpu.cfs_period_us = {CPU_PERIOD_US}",
        f"lxc.cgroup.cpu.cfs_quota_us = {quota}",
    ]


def config_drive_lines(source: Path | None) -> list[str]:
    if source is None:
        return []
    return [f"lxc.mount.entry = {source} {CONFIG_DRIVE_TARGET} none bind,ro,create=dir 0 0"]


def render(cfg: ContainerConfig) -> str:
    """The container's ``config`` file. Raises :class:`InvalidConfig` on unsafe input."""
    validate(cfg)
    lines = [f"# Written by nubes for {cfg.name}; rewritten on every start, do not edit."]
    if cfg.include is not None:
        lines.append(f"lxc.include = {cfg.include}")
    lines += [
        "",
        f"lxc.uts.name = {cfg.hostname}",
        f"lxc.rootfs.path = overlay:{cfg.rootfs_lower}:{cfg.rootfs_upper}",
        f"lxc.init.cmd = {INIT_CMD}",
        f"lxc.signal.halt = {HALT_SIGNAL}",
        f"lxc.signal.reboot = {REBOOT_SIGNAL}",
        "lxc.autodev = 1",
        *(f"lxc.cap.drop = {cap}" for cap in EXTRA_CAP_DROP),
        *config_drive_lines(cfg.config_drive),
        "",
        *nic_lines(cfg.nics),
        "",
        *cgroup_lines(cfg.cgroup, cfg.ram_mb, cfg.vcpus),
        "",
        f"lxc.console.logfile = {cfg.console_log}",
        f"lxc.console.size = {CONSOLE_LOG_SIZE}",
        "lxc.console.rotate = 1",
        f"lxc.log.file = {cfg.lxc_log}",
        f"lxc.log.level = {LOG_LEVEL}",
    ]
    return "\n".join(lines) + "\n"
