"""The contract between the agent and a hypervisor driver.

Drivers only touch the host (processes, files, devices); they never talk to the controller or
the database. Every method is idempotent and keyed by the instance id: every artefact's name
(disk path, socket, container name, tap device) is derived from that id, so a restarted agent
finds what exists (:meth:`Hypervisor.list_instances`) and the reconcile loop adopts it or
removes it. Multi-step side effects register their undo right after each step
(``contextlib.ExitStack``), so a failure leaves nothing half-made.

State machine a driver observes (``PowerState``): ``absent`` (no artefacts) → ``create`` →
``stopped`` → ``start`` → ``running`` ⇄ ``stop`` / ``reboot`` / ``pause`` (``paused``);
``crashed`` when the guest died without being asked; ``destroy`` from anything → ``absent``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar


class PowerState(StrEnum):
    absent = "absent"
    stopped = "stopped"
    running = "running"
    paused = "paused"
    crashed = "crashed"


class ImageKind(StrEnum):
    disk = "disk"  # a qcow2 or raw disk image that boots by itself (VMs)
    rootfs = "rootfs"  # a root file system tarball (system containers)


@dataclass(frozen=True)
class Capabilities:
    kind: str
    image_kinds: frozenset[ImageKind]
    accelerated: bool = False  # KVM really works (qemu); always False for others
    pause: bool = False
    vnc: bool = False
    console_log: bool = True
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Nic:
    """One NIC: the guest sees ``mac``; the host end is the device ``tap`` on ``bridge`` (names
    from :mod:`nubes.domain.netdesired`). For QEMU the agent makes the tap before start; a
    driver with ``makes_own_nics`` (LXC's veth) makes the host end itself."""

    port_id: str
    mac: str
    tap: str
    bridge: str
    mtu: int = 1500


@dataclass(frozen=True)
class InstanceSpec:
    """Everything a driver needs to build and run one instance."""

    id: str
    name: str
    hostname: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    image_id: str
    image_path: Path  # the cached base: a disk image (qcow2/raw) or a rootfs tarball
    image_kind: ImageKind
    image_format: str = "qcow2"  # qcow2 | raw | tar
    user_data: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    public_keys: tuple[str, ...] = ()
    nics: tuple[Nic, ...] = ()
    #: the config drive's files (path -> content, OpenStack layout); None: no config drive
    config_drive: dict[str, bytes] | None = None


@dataclass(frozen=True)
class Observed:
    power: PowerState
    detail: str = ""
    console: dict[str, Any] = field(default_factory=dict)  # e.g. {"vnc_port": 5901}


class HypervisorError(Exception):
    """A driver operation failed. ``retryable`` says whether the agent should try again."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Hypervisor(abc.ABC):
    """Base of every driver. ``state_dir`` is this driver's private directory on the host."""

    name: ClassVar[str]
    #: True when the driver makes each NIC's host end itself (LXC creates a veth pair at
    #: start); False when the agent must plug a tap before start (QEMU opens it).
    makes_own_nics: ClassVar[bool] = False

    def __init__(self, state_dir: Path, **options: Any) -> None:
        self.state_dir = state_dir
        self.options = options

    @classmethod
    @abc.abstractmethod
    def probe(cls) -> str | None:
        """None when the driver can run on this host, else why not (in words)."""

    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abc.abstractmethod
    def list_instances(self) -> list[str]:
        """Ids of every instance with artefacts on this host (running or not)."""

    @abc.abstractmethod
    def status(self, instance_id: str) -> Observed: ...

    @abc.abstractmethod
    def create(self, spec: InstanceSpec) -> None:
        """Make the instance's artefacts (disk overlay, container root); leaves it stopped.
        Idempotent: creating what exists is a no-op."""

    @abc.abstractmethod
    def start(self, spec: InstanceSpec) -> None:
        """Power on. Idempotent: starting a running instance is a no-op."""

    @abc.abstractmethod
    def stop(self, instance_id: str, *, timeout: float = 30.0) -> None:
        """Graceful shutdown (ACPI / SIGPWR), then a hard stop after ``timeout`` seconds."""

    @abc.abstractmethod
    def reboot(self, instance_id: str, *, hard: bool = False) -> None: ...

    def pause(self, instance_id: str) -> None:
        raise HypervisorError(f"{self.name} cannot pause instances", retryable=False)

    def resume(self, instance_id: str) -> None:
        raise HypervisorError(f"{self.name} cannot resume instances", retryable=False)

    @abc.abstractmethod
    def destroy(self, instance_id: str) -> None:
        """Stop hard and remove every artefact (processes, files, devices, mounts).
        Idempotent: destroying what is absent is a no-op."""

    @abc.abstractmethod
    def console_log(self, instance_id: str, *, tail_bytes: int = 65536) -> str: ...


_REGISTRY: dict[str, type[Hypervisor]] = {}


def register(cls: type[Hypervisor]) -> type[Hypervisor]:
    _REGISTRY[cls.name] = cls
    return cls


def registered() -> dict[str, type[Hypervisor]]:
    return dict(_REGISTRY)


def get(name: str) -> type[Hypervisor]:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise HypervisorError(
            f"no hypervisor driver {name!r} (known: {known})", retryable=False
        ) from None


Factory = Callable[..., Hypervisor]
