"""The QEMU driver for real: the tiny guest booted (under TCG here, KVM where it really works)
and driven through its whole life, with the host checked afterwards for leftovers (processes,
directories, sockets). Skips, saying why, without QEMU or the tiny image builder. Whatever a
test leaves running is killed by PID in teardown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nubes.agent.hypervisors.base import (
    HypervisorError,
    ImageKind,
    InstanceSpec,
    PowerState,
)
from nubes.agent.hypervisors.qemu import QemuHypervisor
from nubes.agent.hypervisors.qemu.cmdline import InstancePaths
from nubes.agent.hypervisors.qemu.disks import GIB, create_overlay, virtual_size
from nubes.agent.hypervisors.qemu.qmp import QMPClient
from nubes.images.tiny import TinyImage
from nubes.subp import subp

pytestmark = pytest.mark.integration

MARKER = "NUBES-TINY-BOOTED"
SHUTDOWN_MARKER = "NUBES-TINY-SHUTDOWN"
BOOT_TIMEOUT = 90.0  # TCG on a loaded two-core machine; a boot takes 3-10 s


@pytest.fixture(scope="session")
def tiny_disk(tiny_image: TinyImage) -> Path:
    why = QemuHypervisor.probe()
    if why is not None:
        pytest.skip(f"the qemu driver cannot run here: {why}")
    assert tiny_image.marker == MARKER
    return Path(tiny_image.disk)


def qemu_pids(instance_id: str) -> list[int]:
    """Every live process whose command line names this instance (``nubes-<id>``)."""
    name = f"nubes-{instance_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(arg == name or arg.split(b",")[0].endswith(b"=" + name) for arg in args):
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "qemu"


@pytest.fixture
def started_ids() -> Iterator[list[str]]:
    ids: list[str] = []
    yield ids
    for instance_id in ids:  # whatever the test did, nothing of it keeps running
        for pid in qemu_pids(instance_id):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def driver(state_dir: Path, started_ids: list[str]) -> Iterator[QemuHypervisor]:
    driver = QemuHypervisor(state_dir)
    yield driver
    for instance_id in driver.list_instances():
        driver.destroy(instance_id)
    shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def new_spec(tiny_disk: Path, started_ids: list[str]) -> Callable[..., InstanceSpec]:
    def make(**changes: Any) -> InstanceSpec:
        instance_id = f"it-{os.getpid()}-{len(started_ids)}-{time.monotonic_ns() % 10**6}"
        started_ids.append(instance_id)
        values: dict[str, Any] = {
            "id": instance_id,
            "name": instance_id,
            "hostname": instance_id,
            "vcpus": 1,
            "ram_mb": 192,
            "disk_gb": 1,
            "image_id": "tiny",
            "image_path": tiny_disk,
            "image_kind": ImageKind.disk,
            "image_format": "qcow2",
        }
        values.update(changes)
        return InstanceSpec(**values)

    return make


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until ``predicate`` holds; the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - started


def count(driver: QemuHypervisor, instance_id: str, marker: str = MARKER) -> int:
    return driver.console_log(instance_id, tail_bytes=1 << 20).count(marker)


def wait_boots(driver: QemuHypervisor, instance_id: str, boots: int) -> float:
    return wait_for(
        lambda: count(driver, instance_id) >= boots,
        BOOT_TIMEOUT,
        f"boot {boots} of {instance_id} (console: {driver.console_log(instance_id)[-500:]!r})",
    )


def pid_of(state_dir: Path, instance_id: str) -> int:
    return int(InstancePaths.of(state_dir, instance_id).pidfile.read_text())


def test_whole_life(
    driver: QemuHypervisor, state_dir: Path, new_spec: Callable[..., InstanceSpec]
) -> None:
    spec = new_spec()
    paths = InstancePaths.of(state_dir, spec.id)
    driver.create(spec)
    driver.create(spec)  # idempotent
    assert driver.status(spec.id).power is PowerState.stopped
    info = json.loads(subp(["qemu-img", "info", "-U", "--output=json", paths.disk]).stdout)
    assert info["backing-filename"] == str(spec.image_path.resolve())
    assert info["virtual-size"] >= GIB

    driver.start(spec)
    driver.start(spec)  # idempotent: no second QEMU
    seen = driver.status(spec.id)
    assert seen.power is PowerState.running
    assert 5900 <= seen.console["vnc_port"] < 6900
    assert len(qemu_pids(spec.id)) == 1
    wait_boots(driver, spec.id, 1)

    driver.stop(spec.id, timeout=60)  # graceful: the guest runs its shutdown and powers off
    assert count(driver, spec.id, SHUTDOWN_MARKER) == 1
    assert driver.status(spec.id).power is PowerState.stopped
    assert qemu_pids(spec.id) == []
    driver.stop(spec.id)  # idempotent

    driver.start(spec)
    wait_boots(driver, spec.id, 2)  # the console log survives restarts
    driver.reboot(spec.id, hard=True)
    assert driver.status(spec.id).power is PowerState.running
    wait_boots(driver, spec.id, 3)
    assert count(driver, spec.id, SHUTDOWN_MARKER) == 1  # a reset gives the guest no say

    driver.destroy(spec.id)
    assert driver.status(spec.id).power is PowerState.absent
    assert qemu_pids(spec.id) == []
    assert not paths.root.exists()
    assert not paths.qmp_socket.exists()
    assert driver.list_instances() == []
    driver.destroy(spec.id)  # idempotent


def test_soft_reboot_lets_the_guest_shut_down_and_keeps_the_process(
    driver: QemuHypervisor, state_dir: Path, new_spec: Callable[..., InstanceSpec]
) -> None:
    spec = new_spec()
    driver.create(spec)
    driver.start(spec)
    wait_boots(driver, spec.id, 1)
    pid = pid_of(state_dir, spec.id)
    driver.reboot(spec.id)
    assert driver.status(spec.id).power is PowerState.running
    wait_boots(driver, spec.id, 2)
    assert count(driver, spec.id, SHUTDOWN_MARKER) == 1
    assert pid_of(state_dir, spec.id) == pid  # same QEMU: same VNC and QMP endpoints
    # and the guest powering off later still ends QEMU (the power-off action was restored)
    driver.stop(spec.id, timeout=60)
    assert count(driver, spec.id, SHUTDOWN_MARKER) == 2
    assert driver.status(spec.id).power is PowerState.stopped


def test_kill_9_reads_as_crashed_and_start_recovers(
    driver: QemuHypervisor, state_dir: Path, new_spec: Callable[..., InstanceSpec]
) -> None:
    spec = new_spec()
    driver.create(spec)
    driver.start(spec)
    os.kill(pid_of(state_dir, spec.id), signal.SIGKILL)
    wait_for(lambda: qemu_pids(spec.id) == [], 10, "QEMU to die")
    seen = driver.status(spec.id)
    assert seen.power is PowerState.crashed
    assert "without being asked" in seen.detail
    driver.start(spec)
    assert driver.status(spec.id).power is PowerState.running
    wait_boots(driver, spec.id, 1)


def test_a_guest_that_powers_itself_off_is_stopped_not_crashed(
    driver: QemuHypervisor, state_dir: Path, new_spec: Callable[..., InstanceSpec]
) -> None:
    spec = new_spec()
    driver.create(spec)
    driver.start(spec)
    wait_boots(driver, spec.id, 1)
    with QMPClient.connect(InstancePaths.of(state_dir, spec.id).qmp_socket) as qmp:
        qmp.execute("system_powerdown")  # not through the driver: as if the guest chose to
    wait_for(lambda: qemu_pids(spec.id) == [], 60, "the guest to power off")
    assert driver.status(spec.id).power is PowerState.stopped


def test_a_guest_that_ignores_acpi_is_stopped_hard_after_the_timeout(
    driver: QemuHypervisor, new_spec: Callable[..., InstanceSpec]
) -> None:
    spec = new_spec()
    driver.create(spec)
    driver.start(spec)  # still in its firmware: nothing listens to the power button yet
    started = time.monotonic()
    driver.stop(spec.id, timeout=0.5)
    assert time.monotonic() - started >= 0.5
    assert driver.status(spec.id).power is PowerState.stopped  # not crashed: nubes asked
    assert qemu_pids(spec.id) == []
    assert count(driver, spec.id, SHUTDOWN_MARKER) == 0


def test_pause_and_resume(driver: QemuHypervisor, new_spec: Callable[..., InstanceSpec]) -> None:
    spec = new_spec()
    driver.create(spec)
    driver.start(spec)
    driver.pause(spec.id)
    driver.pause(spec.id)
    assert driver.status(spec.id).power is PowerState.paused
    driver.resume(spec.id)
    assert driver.status(spec.id).power is PowerState.running
    driver.pause(spec.id)
    driver.start(spec)  # start resumes a paused guest
    assert driver.status(spec.id).power is PowerState.running
    wait_boots(driver, spec.id, 1)
    driver.pause(spec.id)
    started = time.monotonic()
    driver.stop(spec.id, timeout=30)  # a paused guest hears no ACPI: hard at once
    assert time.monotonic() - started < 10
    assert driver.status(spec.id).power is PowerState.stopped


def test_a_restarted_agent_adopts_running_instances(
    driver: QemuHypervisor, state_dir: Path, new_spec: Callable[..., InstanceSpec]
) -> None:
    spec = new_spec()
    driver.create(spec)
    driver.start(spec)
    before = driver.status(spec.id)

    adopter = QemuHypervisor(state_dir)  # a new agent process would build just this
    assert adopter.list_instances() == [spec.id]
    seen = adopter.status(spec.id)
    assert seen.power is PowerState.running
    assert seen.console == before.console
    adopter.start(spec)  # a no-op: the adopted QEMU is the one
    assert len(qemu_pids(spec.id)) == 1
    wait_boots(adopter, spec.id, 1)
    adopter.stop(spec.id, timeout=60)
    assert driver.status(spec.id).power is PowerState.stopped


def test_vnc_is_on_loopback_and_each_instance_has_its_own(
    driver: QemuHypervisor, new_spec: Callable[..., InstanceSpec]
) -> None:
    specs = [new_spec(), new_spec()]
    for spec in specs:
        driver.create(spec)
        driver.start(spec)
    ports = [driver.status(spec.id).console["vnc_port"] for spec in specs]
    assert ports[0] != ports[1]
    listening = {
        (fields[1].split(":")[0], int(fields[1].split(":")[1], 16))
        for fields in (row.split() for row in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if fields[3] == "0A"  # LISTEN
    }
    for port in ports:
        assert ("0100007F", port) in listening  # 127.0.0.1 only
        assert ("00000000", port) not in listening
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            assert conn.recv(12).startswith(b"RFB ")


def test_a_failed_start_leaves_nothing_running(
    driver: QemuHypervisor, state_dir: Path, new_spec: Callable[..., InstanceSpec]
) -> None:
    spec = new_spec(ram_mb=64 * 1024 * 1024 * 1024)  # 64 PiB: QEMU refuses to start
    driver.create(spec)
    with pytest.raises(HypervisorError, match="QEMU did not start"):
        driver.start(spec)
    assert driver.status(spec.id).power is PowerState.stopped
    assert qemu_pids(spec.id) == []
    assert not InstancePaths.of(state_dir, spec.id).pidfile.exists()


def test_overlays_grow_to_the_flavor_and_never_below_the_image(
    tiny_disk: Path, tmp_path: Path
) -> None:
    base_size = virtual_size(tiny_disk, "qcow2")
    before = tiny_disk.read_bytes()
    assert create_overlay(tmp_path / "big.qcow2", tiny_disk, "qcow2", 3) == 3 * GIB
    assert virtual_size(tmp_path / "big.qcow2", "qcow2") == 3 * GIB
    assert create_overlay(tmp_path / "small.qcow2", tiny_disk, "qcow2", 0) == base_size
    with pytest.raises(HypervisorError, match="not there"):
        create_overlay(tmp_path / "x.qcow2", tmp_path / "missing.qcow2", "qcow2", 1)
    with pytest.raises(HypervisorError) as caught:
        create_overlay(tmp_path / "y.qcow2", tiny_disk, "vmdk", 1)
    assert not caught.value.retryable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.qcow2", "small.qcow2"]
    assert tiny_disk.read_bytes() == before  # the base is never written
