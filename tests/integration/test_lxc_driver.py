"""The LXC driver for real: the tiny guest's rootfs tarball booted as a system container,
driven through its whole life, with the host checked afterwards for leftovers (processes,
mounts, directories). Needs root, lxc and overlayfs; skips, saying why, without them."""

from __future__ import annotations

import os
import shutil
import signal
import struct
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
from nubes.agent.hypervisors.lxc import LxcHypervisor
from nubes.agent.hypervisors.lxc.config import CPU_PERIOD_US, CgroupVersion
from nubes.agent.hypervisors.lxc.host import PROC_MOUNTINFO, mounts_under, read_cgroup_layout
from nubes.agent.hypervisors.lxc.layout import container_name
from nubes.images.tiny import TinyImage
from nubes.subp import subp

pytestmark = pytest.mark.integration

MARKER = "NUBES-TINY-BOOTED"
BOOT_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def tiny_rootfs(tiny_image: TinyImage) -> Path:
    why = LxcHypervisor.probe()
    if why is not None:
        pytest.skip(f"the lxc driver cannot run here: {why}")
    assert tiny_image.marker == MARKER
    return Path(tiny_image.rootfs)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "lxc"
    yield state
    # Whatever the test did, leave no container running and nothing on disk.
    lxcpath = state / "containers"
    if lxcpath.is_dir():
        for entry in lxcpath.iterdir():
            subp(["lxc-stop", "-n", entry.name, "-P", lxcpath, "-k"], check=False)
            for point in mounts_under(PROC_MOUNTINFO.read_text(), entry):
                subp(["umount", "--lazy", point], check=False)
    shutil.rmtree(state, ignore_errors=True)


def make_spec(rootfs: Path, instance_id: str, **changes: Any) -> InstanceSpec:
    values: dict[str, Any] = {
        "id": instance_id,
        "name": instance_id,
        "hostname": f"host-{instance_id}",
        "vcpus": 1,
        "ram_mb": 96,
        "disk_gb": 1,
        "image_id": "tiny",
        "image_path": rootfs,
        "image_kind": ImageKind.rootfs,
        "image_format": "tar",
    }
    values.update(changes)
    return InstanceSpec(**values)


def wait_for(what: str, check: Callable[[], bool], timeout: float = BOOT_TIMEOUT) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def processes_mentioning(text: str) -> list[str]:
    """Command lines of every process whose command line contains ``text``
    (lxc-start, and the ``[lxc monitor] <lxcpath> <name>`` process)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def cgroup_value(driver: LxcHypervisor, instance_id: str, key: str) -> str:
    result = subp(
        ["lxc-cgroup", "-n", container_name(instance_id), "-P", driver.layout.lxcpath, key]
    )
    return result.stdout.strip()


def console_has(driver: LxcHypervisor, instance_id: str, text: str) -> Callable[[], bool]:
    return lambda: text in driver.console_log(instance_id)


def timed(timings: dict[str, float], label: str, action: Callable[[], object]) -> None:
    started = time.monotonic()
    action()
    timings[label] = round(time.monotonic() - started, 3)


def test_lifecycle_from_create_to_destroy_leaves_nothing(
    tiny_rootfs: Path, state_dir: Path
) -> None:
    driver = LxcHypervisor(state_dir)
    spec = make_spec(tiny_rootfs, "life-1", vcpus=2)
    timings: dict[str, float] = {}

    def booted(count: int) -> Callable[[], bool]:
        return lambda: driver.console_log(spec.id).count(MARKER) >= count

    timed(timings, "create", lambda: driver.create(spec))
    assert driver.status(spec.id).power is PowerState.stopped
    assert driver.list_instances() == [spec.id]
    driver.create(spec)  # idempotent

    timed(timings, "start", lambda: driver.start(spec))
    timings["start to marker"] = round(timings["start"] + wait_for("boot", booted(1)), 3)
    assert f"{MARKER} hostname={spec.hostname}" in driver.console_log(spec.id)
    assert driver.status(spec.id).power is PowerState.running
    driver.start(spec)  # idempotent

    # Limits: memory hard limit and CPU quota in the container's cgroup.
    layout = read_cgroup_layout()
    memory_bytes = str(spec.ram_mb * 1024 * 1024)
    if layout is CgroupVersion.v2:
        assert cgroup_value(driver, spec.id, "memory.max") == memory_bytes
        assert cgroup_value(driver, spec.id, "cpu.max") == f"{2 * CPU_PERIOD_US} {CPU_PERIOD_US}"
    else:
        assert cgroup_value(driver, spec.id, "memory.limit_in_bytes") == memory_bytes
        assert cgroup_value(driver, spec.id, "cpu.cfs_quota_us") == str(2 * CPU_PERIOD_US)

    # Adoption: a new driver (a restarted agent) on the same state_dir sees the same thing.
    adopted = LxcHypervisor(state_dir)
    assert adopted.list_instances() == [spec.id]
    assert adopted.status(spec.id).power is PowerState.running

    timed(timings, "stop", lambda: driver.stop(spec.id, timeout=20))
    assert driver.status(spec.id).power is PowerState.stopped
    assert "NUBES-TINY-SHUTDOWN" in driver.console_log(spec.id)  # a clean halt, not a kill
    driver.stop(spec.id)  # idempotent

    driver.start(spec)
    wait_for("second boot", booted(2))

    timed(timings, "soft reboot", lambda: driver.reboot(spec.id))
    assert driver.status(spec.id).power is PowerState.running
    wait_for("boot after the soft reboot", booted(3))
    timed(timings, "hard reboot", lambda: driver.reboot(spec.id, hard=True))
    assert driver.status(spec.id).power is PowerState.running
    wait_for("boot after the hard reboot", booted(4))

    driver.pause(spec.id)
    assert driver.status(spec.id).power is PowerState.paused
    driver.pause(spec.id)  # idempotent
    driver.resume(spec.id)
    assert driver.status(spec.id).power is PowerState.running

    name = container_name(spec.id)
    instance_dir = driver.layout.instance(spec.id).dir
    assert processes_mentioning(name)
    timed(timings, "destroy", lambda: driver.destroy(spec.id))
    assert driver.status(spec.id).power is PowerState.absent
    assert driver.list_instances() == []
    assert not instance_dir.exists()
    assert mounts_under(PROC_MOUNTINFO.read_text(), instance_dir) == []
    wait_for("LXC processes to exit", lambda: not processes_mentioning(name), timeout=10)
    driver.destroy(spec.id)  # idempotent
    print(f"\nlxc timings (s): {timings}")


def test_a_container_that_dies_unasked_is_crashed_and_destroy_works_on_it(
    tiny_rootfs: Path, state_dir: Path
) -> None:
    driver = LxcHypervisor(state_dir)
    spec = make_spec(tiny_rootfs, "crash-1")
    driver.start(spec)  # creates it too
    wait_for("boot", console_has(driver, spec.id, MARKER))
    pid = subp(
        ["lxc-info", "-n", container_name(spec.id), "-P", driver.layout.lxcpath, "-p", "-H"]
    ).stdout.strip()
    os.kill(int(pid), signal.SIGKILL)
    wait_for("the crash", lambda: driver.status(spec.id).power is PowerState.crashed, 10)
    driver.start(spec)
    assert driver.status(spec.id).power is PowerState.running
    driver.pause(spec.id)
    driver.destroy(spec.id)  # from paused
    assert driver.status(spec.id).power is PowerState.absent
    wait_for(
        "LXC processes to exit",
        lambda: not processes_mentioning(container_name(spec.id)),
        timeout=10,
    )


def test_bad_input_is_refused_before_anything_is_made(tiny_rootfs: Path, state_dir: Path) -> None:
    driver = LxcHypervisor(state_dir)
    spec = make_spec(tiny_rootfs, "bad-1", hostname="x\nlxc.mount.entry = / host none bind")
    with pytest.raises(HypervisorError, match="hostname") as caught:
        driver.create(spec)
    assert caught.value.retryable is False
    assert driver.status(spec.id).power is PowerState.absent
    assert driver.list_instances() == []

    missing = make_spec(tiny_rootfs, "bad-2", image_id="gone", image_path=state_dir / "no.tgz")
    with pytest.raises(HypervisorError, match="does not exist"):
        driver.create(missing)
    with pytest.raises(HypervisorError, match="no lxc instance"):
        driver.stop("bad-2")
    driver.destroy("bad-2")  # absent: a no-op


def partitioned_ext4_qcow2(rootfs_tarball: Path, work: Path) -> Path:
    """A qcow2 disk with an MBR and one ext4 partition holding the tiny rootfs, made without
    root-only tools: mkfs.ext4 -d fills the file system from a directory."""
    tree = work / "tree"
    tree.mkdir()
    subp(["tar", "--extract", f"--file={rootfs_tarball}", f"--directory={tree}"])
    fs = work / "fs.ext4"
    subp(["truncate", "--size=48M", fs])
    subp(["mkfs.ext4", "-q", "-F", "-d", tree, fs])
    first_sector = 2048
    raw = work / "disk.raw"
    with raw.open("wb") as out:
        head = bytearray(first_sector * 512)
        sectors = fs.stat().st_size // 512
        struct.pack_into("<B3xB3xII", head, 446, 0x80, 0x83, first_sector, sectors)
        head[510:512] = b"\x55\xaa"
        out.write(head)
        with fs.open("rb") as source:
            shutil.copyfileobj(source, out)
    qcow2 = work / "disk.qcow2"
    subp(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2])
    return qcow2


def test_a_disk_image_is_converted_once_and_boots(
    tiny_rootfs: Path, state_dir: Path, tmp_path: Path
) -> None:
    for tool in ("qemu-img", "mkfs.ext4", "blkid"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: cannot make or convert a disk image")
    disk = partitioned_ext4_qcow2(tiny_rootfs, tmp_path)
    driver = LxcHypervisor(state_dir)
    specs = [
        make_spec(
            tiny_rootfs,
            f"disk-{n}",
            image_id="tiny-disk",
            image_path=disk,
            image_kind=ImageKind.disk,
            image_format="qcow2",
        )
        for n in (1, 2)
    ]
    started = time.monotonic()
    driver.create(specs[0])
    convert_seconds = time.monotonic() - started
    rootfs = driver.layout.image_dir("tiny-disk") / "rootfs"
    converted_at = rootfs.stat().st_mtime_ns
    driver.create(specs[1])  # the cache is reused, not converted again
    assert rootfs.stat().st_mtime_ns == converted_at
    assert sorted(p.name for p in rootfs.parent.iterdir()) == [".lock", "rootfs"]
    for spec in specs:
        driver.start(spec)
    for spec in specs:
        wait_for("boot from the disk image", console_has(driver, spec.id, MARKER))
    # The conversion's loop device and mount are gone; the containers' overlays live in their
    # own mount namespaces.
    loops = subp(["losetup", "--list", "--noheadings", "--output", "BACK-FILE"]).stdout
    assert str(state_dir) not in loops
    assert mounts_under(PROC_MOUNTINFO.read_text(), state_dir) == []
    for spec in specs:
        driver.destroy(spec.id)
    assert driver.list_instances() == []
    print(f"\nlxc disk image: first create (convert + copy) {convert_seconds:.3f} s")
