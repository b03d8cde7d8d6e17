"""Config drives for real: the tiny guest booted by the QEMU driver (a read-only virtio ISO
labelled config-2) and by the LXC driver (a read-only bind mount at cloud-init's seed
directory) takes its hostname from the metadata nubes generates, and the drive is rebuilt
when that content changes and gone once the instance is destroyed (or swept as an orphan).

The guest's own name says where it came from: QEMU gives the guest no other source (it would
call itself "tiny"), and the container is given a different host name of its own. Whatever a
test leaves running is killed by PID (QEMU) or by name (LXC) in teardown."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nubes.agent.hypervisors.base import ImageKind, InstanceSpec, PowerState
from nubes.agent.hypervisors.lxc import LxcHypervisor
from nubes.agent.hypervisors.lxc.host import PROC_MOUNTINFO, mounts_under
from nubes.agent.hypervisors.lxc.layout import container_name
from nubes.agent.hypervisors.qemu import QemuHypervisor
from nubes.agent.hypervisors.qemu.cmdline import InstancePaths
from nubes.agent.reconcile import Reconciler
from nubes.compute.metadata import config_drive_files
from nubes.images.tiny import MARKER, TinyImage
from nubes.store.models import Instance
from nubes.subp import SubpError, subp
from tests.integration.test_qemu_driver import qemu_pids

pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 90.0  # TCG on a loaded two-core machine; a boot takes 3-10 s


def drive_of(name: str, instance_id: str, **changes: Any) -> dict[str, bytes]:
    """The config drive the controller would send for an instance called ``name``."""
    row = Instance(id=instance_id, name=name, project_id="p" * 32, flavor_id="1", **changes)
    return config_drive_files(row)


def wait_for(what: str, check: Callable[[], bool], console: Callable[[], str]) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {BOOT_TIMEOUT} s; console:\n{console()}")
        time.sleep(0.1)


def booted_as(console: Callable[[], str], hostname: str, boot: int = 1) -> Callable[[], bool]:
    return lambda: console().count(f"{MARKER} hostname={hostname} ") >= boot


def unique_id(tag: str) -> str:
    return f"cdrive-{tag}-{os.getpid()}-{time.monotonic_ns() % 10**6}"


# -- QEMU --------------------------------------------------------------------------------------


@pytest.fixture
def qemu(tiny_image: TinyImage, tmp_path: Path) -> Iterator[tuple[QemuHypervisor, list[str]]]:
    why = QemuHypervisor.probe()
    if why is not None:
        pytest.skip(f"the qemu driver cannot run here: {why}")
    driver = QemuHypervisor(tmp_path / "qemu", vnc=False)
    ids: list[str] = []
    try:
        yield driver, ids
    finally:
        for instance_id in ids:
            for pid in qemu_pids(instance_id):
                os.kill(pid, signal.SIGKILL)
        for instance_id in driver.list_instances():
            driver.destroy(instance_id)
        shutil.rmtree(tmp_path / "qemu", ignore_errors=True)


def qemu_spec(image: TinyImage, instance_id: str, drive: dict[str, bytes] | None) -> InstanceSpec:
    return InstanceSpec(
        id=instance_id,
        name=instance_id,
        hostname=instance_id,
        vcpus=1,
        ram_mb=192,
        disk_gb=1,
        image_id="tiny",
        image_path=Path(image.disk),
        image_kind=ImageKind.disk,
        image_format="qcow2",
        config_drive=drive,
    )


def test_a_vm_takes_its_hostname_from_the_config_drive(
    qemu: tuple[QemuHypervisor, list[str]], tiny_image: TinyImage
) -> None:
    driver, ids = qemu
    instance_id = unique_id("vm")
    ids.append(instance_id)
    paths = InstancePaths.of(driver.state_dir, instance_id)
    spec = qemu_spec(tiny_image, instance_id, drive_of("cd-test-1", instance_id))

    driver.create(spec)
    assert paths.config_drive.is_file()
    built = paths.config_drive.stat().st_mtime_ns
    driver.start(spec)

    def console() -> str:
        return driver.console_log(instance_id, tail_bytes=1 << 20)

    wait_for("boot as cd-test-1", booted_as(console, "cd-test-1"), console)
    assert paths.config_drive.stat().st_mtime_ns == built  # same content: not rebuilt

    # New content (the instance was renamed) reaches the guest at its next start.
    driver.stop(instance_id, timeout=60)
    driver.start(qemu_spec(tiny_image, instance_id, drive_of("cd-test-2", instance_id)))
    wait_for("boot as cd-test-2", booted_as(console, "cd-test-2"), console)

    driver.destroy(instance_id)
    assert driver.status(instance_id).power is PowerState.absent
    assert not paths.config_drive.exists()
    assert not paths.root.exists()
    assert qemu_pids(instance_id) == []


def test_without_a_config_drive_the_vm_keeps_its_default_name(
    qemu: tuple[QemuHypervisor, list[str]], tiny_image: TinyImage
) -> None:
    driver, ids = qemu
    instance_id = unique_id("plain")
    ids.append(instance_id)
    spec = qemu_spec(tiny_image, instance_id, None)
    driver.create(spec)
    assert not InstancePaths.of(driver.state_dir, instance_id).config_drive.exists()
    driver.start(spec)

    def console() -> str:
        return driver.console_log(instance_id, tail_bytes=1 << 20)

    wait_for("boot as tiny", booted_as(console, "tiny"), console)


class NoController:
    """The orphan sweep talks only to the driver; anything else would be a bug here."""


def test_the_orphan_sweep_removes_an_orphan_s_config_drive(
    qemu: tuple[QemuHypervisor, list[str]], tiny_image: TinyImage
) -> None:
    driver, ids = qemu
    instance_id = unique_id("orphan")
    ids.append(instance_id)
    driver.create(qemu_spec(tiny_image, instance_id, drive_of("orphan-1", instance_id)))
    iso = InstancePaths.of(driver.state_dir, instance_id).config_drive
    assert iso.is_file()

    reconciler = Reconciler(driver, NoController(), NoController(), workers=1)  # type: ignore[arg-type]
    try:
        reconciler.reconcile_all([], wait=True)  # the controller wants nothing on this host
    finally:
        reconciler.close()

    assert not iso.exists()
    assert driver.list_instances() == []


# -- LXC ---------------------------------------------------------------------------------------


@pytest.fixture
def lxc(tiny_image: TinyImage, tmp_path: Path) -> Iterator[LxcHypervisor]:
    why = LxcHypervisor.probe()
    if why is not None:
        pytest.skip(f"the lxc driver cannot run here: {why}")
    state = tmp_path / "lxc"
    try:
        yield LxcHypervisor(state)
    finally:
        lxcpath = state / "containers"
        if lxcpath.is_dir():
            for entry in lxcpath.iterdir():
                subp(["lxc-stop", "-n", entry.name, "-P", lxcpath, "-k"], check=False)
                for point in mounts_under(PROC_MOUNTINFO.read_text(), entry):
                    subp(["umount", "--lazy", point], check=False)
        shutil.rmtree(state, ignore_errors=True)


def test_a_container_takes_its_hostname_from_the_seed_dir_read_only(
    lxc: LxcHypervisor, tiny_image: TinyImage
) -> None:
    instance_id = unique_id("ct")
    spec = InstanceSpec(
        id=instance_id,
        name=instance_id,
        hostname="uts-name",  # what the container would call itself without the drive
        vcpus=1,
        ram_mb=96,
        disk_gb=1,
        image_id="tiny",
        image_path=Path(tiny_image.rootfs),
        image_kind=ImageKind.rootfs,
        image_format="tar",
        config_drive=drive_of("cd-test-1", instance_id, user_data="#!/bin/sh\n"),
    )
    tree = lxc.layout.instance(instance_id).config_drive

    lxc.create(spec)
    assert (tree / "openstack" / "latest" / "user_data").read_bytes() == b"#!/bin/sh\n"
    lxc.start(spec)

    def console() -> str:
        return lxc.console_log(instance_id)

    wait_for("boot as cd-test-1", booted_as(console, "cd-test-1"), console)
    attach = ["lxc-attach", "-n", container_name(instance_id), "-P", lxc.layout.lxcpath, "--"]
    seed = "/var/lib/cloud/seed/config_drive"
    listed = subp([*attach, "ls", f"{seed}/openstack/latest"], timeout=30).stdout.split()
    assert sorted(listed) == [
        "meta_data.json",
        "network_data.json",
        "user_data",
        "vendor_data.json",
    ]
    with pytest.raises(SubpError, match="Read-only file system"):
        subp([*attach, "touch", f"{seed}/written-by-the-guest"], timeout=30)

    lxc.destroy(instance_id)
    assert lxc.status(instance_id).power is PowerState.absent
    assert not tree.exists()
    assert not tree.with_name("config-drive.sha256").exists()
