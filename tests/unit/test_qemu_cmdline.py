"""The QEMU driver without QEMU: the command line it builds, how it names and recognises an
instance's files and process, how it reads a power state from what is left on disk, and the
KVM probe's refusals."""

from __future__ import annotations

import itertools
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from nubes.agent.hypervisors.base import (
    HypervisorError,
    ImageKind,
    InstanceSpec,
    PowerState,
    registered,
)
from nubes.agent.hypervisors.qemu import QemuHypervisor, process, vnc
from nubes.agent.hypervisors.qemu.cmdline import (
    Accel,
    InstancePaths,
    Machine,
    build_argv,
    escape,
    is_instance_process,
    valid_instance_id,
    vnc_port,
)
from nubes.agent.hypervisors.qemu.kvm import probe_kvm

PATHS = InstancePaths(Path("/var/lib/nubes/qemu/instances/i-1"))


def option(argv: list[str], name: str) -> list[str]:
    """Every value given to ``name`` on the command line."""
    return [value for flag, value in itertools.pairwise(argv) if flag == name]


def argv_for(**changes: Any) -> list[str]:
    values: dict[str, Any] = {
        "instance_id": "i-1",
        "vcpus": 2,
        "ram_mb": 512,
        "accel": Accel.tcg,
        "vnc_display": 3,
    }
    values.update(changes)
    return build_argv(Machine(**values), PATHS)


def test_the_machine_is_a_q35_with_the_spec_s_cpus_and_memory() -> None:
    argv = argv_for()
    assert argv[0] == "qemu-system-x86_64"
    assert option(argv, "-machine") == ["q35"]
    assert option(argv, "-smp") == ["2"]
    assert option(argv, "-m") == ["512M"]
    assert "-nodefaults" in argv
    assert "-no-user-config" in argv


def test_tcg_gets_the_max_cpu_and_kvm_the_host_cpu() -> None:
    assert option(argv_for(), "-accel") == ["tcg"]
    assert option(argv_for(), "-cpu") == ["max"]
    assert option(argv_for(accel=Accel.kvm), "-accel") == ["kvm"]
    assert option(argv_for(accel=Accel.kvm), "-cpu") == ["host"]


def test_guests_get_no_network() -> None:
    argv = argv_for()
    assert option(argv, "-nic") == ["none"]
    assert not any("netdev" in arg or arg == "-net" for arg in argv)


def test_the_disk_is_the_overlay_on_virtio() -> None:
    argv = argv_for()
    (blockdev,) = option(argv, "-blockdev")
    node = json.loads(blockdev)
    assert node["driver"] == "qcow2"
    assert node["file"] == {"driver": "file", "filename": str(PATHS.disk)}
    assert option(argv, "-device")[0] == f"virtio-blk-pci,drive={node['node-name']},bootindex=0"


def test_files_are_the_instance_s_and_qmp_is_relative() -> None:
    argv = argv_for()
    chardevs = option(argv, "-chardev")
    assert f"file,id=serial0,path={PATHS.serial_log},append=on" in chardevs
    assert "socket,id=qmp,path=qmp.sock,server=on,wait=off" in chardevs
    assert option(argv, "-serial") == ["chardev:serial0"]
    assert option(argv, "-mon") == ["chardev=qmp,mode=control"]
    assert option(argv, "-pidfile") == [str(PATHS.pidfile)]
    assert option(argv, "-D") == [str(PATHS.qemu_log)]


def test_started_paused_and_daemonized() -> None:
    argv = argv_for()
    assert argv[-2:] == ["-S", "-daemonize"]
    assert "-no-shutdown" not in argv  # a guest that powers off ends its QEMU


def test_vnc_binds_to_loopback_only() -> None:
    argv = argv_for(vnc_display=7)
    assert option(argv, "-vnc") == ["127.0.0.1:7"]
    assert "VGA" in option(argv, "-device")
    assert vnc_port(7) == 5907


def test_without_vnc_there_is_no_display_at_all() -> None:
    argv = argv_for(vnc_display=None)
    assert option(argv, "-vnc") == []
    assert option(argv, "-display") == ["none"]  # else QEMU falls back to a VNC on 0.0.0.0


def test_commas_in_paths_are_escaped() -> None:
    assert escape("/a,b/c") == "/a,,b/c"
    odd = InstancePaths(Path("/state,x/instances/i-1"))
    argv = build_argv(Machine("i-1", 1, 128, Accel.tcg), odd)
    assert "file,id=serial0,path=/state,,x/instances/i-1/serial.log,append=on" in argv
    assert json.loads(option(argv, "-blockdev")[0])["file"]["filename"] == str(odd.disk)


@pytest.mark.parametrize(("vcpus", "ram_mb"), [(0, 512), (1, 8)])
def test_implausible_machines_are_refused(vcpus: int, ram_mb: int) -> None:
    with pytest.raises(ValueError, match="implausible"):
        argv_for(vcpus=vcpus, ram_mb=ram_mb)


def test_the_process_is_recognised_by_its_name_only() -> None:
    argv = argv_for()
    assert option(argv, "-name") == ["guest=nubes-i-1,debug-threads=on"]
    assert is_instance_process(argv, "i-1")
    assert not is_instance_process(argv, "i")  # a prefix is not a match
    assert not is_instance_process(argv_for(instance_id="i-10"), "i-1")
    assert not is_instance_process([], "i-1")  # a zombie's or vanished process's cmdline
    assert not is_instance_process(["sleep", "nubes-i-1"], "i-1")


@pytest.mark.parametrize(
    ("instance_id", "valid"),
    [
        ("0b4f6a9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", True),
        ("i-1", True),
        ("web_01.prod", True),
        ("", False),
        ("../etc", False),
        ("a/b", False),
        (".hidden", False),
        ("a,b", False),
        ("a..b", False),
        ("x" * 129, False),
    ],
)
def test_instance_ids_must_be_safe_names(instance_id: str, valid: bool) -> None:
    assert valid_instance_id(instance_id) is valid


def test_kvm_probe_refuses_a_missing_device() -> None:
    result = probe_kvm("/nonexistent/kvm")
    assert not result.usable
    assert "no /nonexistent/kvm" in result.why


def test_kvm_probe_refuses_a_device_that_is_no_kvm(tmp_path: Path) -> None:
    fake = tmp_path / "kvm"
    fake.write_text("")
    result = probe_kvm(str(fake))
    assert not result.usable
    assert "KVM_GET_API_VERSION failed" in result.why


def test_the_probe_on_this_host_gives_a_reason_either_way() -> None:
    result = probe_kvm()
    assert result.why
    if result.ns_per_iteration is not None:
        assert result.usable is (result.ns_per_iteration <= 100)


# -- the driver, on directories arranged by hand ------------------------------------------


def make_spec(instance_id: str = "i-1", **changes: Any) -> InstanceSpec:
    values: dict[str, Any] = {
        "id": instance_id,
        "name": instance_id,
        "hostname": instance_id,
        "vcpus": 1,
        "ram_mb": 128,
        "disk_gb": 1,
        "image_id": "tiny",
        "image_path": Path("/nonexistent/tiny.qcow2"),
        "image_kind": ImageKind.disk,
    }
    values.update(changes)
    return InstanceSpec(**values)


@pytest.fixture
def driver(tmp_path: Path) -> QemuHypervisor:
    return QemuHypervisor(tmp_path / "qemu", accel="tcg")


def made(driver: QemuHypervisor, instance_id: str = "i-1") -> InstancePaths:
    """An instance as ``create`` leaves it, without qemu-img."""
    paths = InstancePaths.of(driver.state_dir, instance_id)
    paths.root.mkdir(parents=True)
    paths.disk.write_bytes(b"")
    paths.spec.write_text(json.dumps({"spec": {"vcpus": 1, "ram_mb": 128}}))
    return paths


@pytest.fixture
def stranger() -> int:
    """A live process that is not QEMU, standing in for a recycled PID: this one."""
    return os.getpid()


def test_registered_and_configured(driver: QemuHypervisor) -> None:
    assert registered()["qemu"] is QemuHypervisor
    caps = driver.capabilities()
    assert caps.kind == "qemu"
    assert caps.image_kinds == frozenset({ImageKind.disk})
    assert caps.details["accel"] == "tcg"
    assert not caps.accelerated
    assert caps.pause
    assert set(caps.details["capacity"]) == {"vcpus", "ram_mb", "disk_gb"}
    with pytest.raises(HypervisorError):
        QemuHypervisor(driver.state_dir, accel="hvf")


def test_absent_instances(driver: QemuHypervisor) -> None:
    assert driver.list_instances() == []
    assert driver.status("i-1").power is PowerState.absent
    driver.destroy("i-1")  # a no-op
    for operation in (driver.stop, driver.pause, driver.resume, driver.console_log):
        with pytest.raises(HypervisorError) as caught:
            operation("i-1")
        assert not caught.value.retryable
    with pytest.raises(HypervisorError) as caught:
        driver.start(make_spec())
    assert not caught.value.retryable


def test_invalid_ids_are_refused_everywhere(driver: QemuHypervisor) -> None:
    with pytest.raises(HypervisorError, match="invalid instance id"):
        driver.status("../../etc")
    with pytest.raises(HypervisorError, match="invalid instance id"):
        driver.create(make_spec("a/b"))


def test_rootfs_images_are_refused(driver: QemuHypervisor) -> None:
    with pytest.raises(HypervisorError) as caught:
        driver.create(make_spec(image_kind=ImageKind.rootfs, image_format="tar"))
    assert not caught.value.retryable
    assert driver.list_instances() == []


def test_a_failed_create_leaves_nothing(driver: QemuHypervisor) -> None:
    with pytest.raises(HypervisorError, match="not there"):
        driver.create(make_spec())
    assert driver.list_instances() == []


def test_leftovers_of_an_unfinished_create_are_listed_but_absent(driver: QemuHypervisor) -> None:
    paths = InstancePaths.of(driver.state_dir, "half")
    paths.root.mkdir(parents=True)
    (paths.root / "disk.qcow2.partial").write_bytes(b"")
    assert driver.list_instances() == ["half"]
    seen = driver.status("half")
    assert seen.power is PowerState.absent
    assert "unfinished" in seen.detail
    driver.destroy("half")
    assert not paths.root.exists()


def test_never_started_is_stopped(driver: QemuHypervisor) -> None:
    made(driver)
    assert driver.list_instances() == ["i-1"]
    assert driver.status("i-1").power is PowerState.stopped
    assert driver.console_log("i-1") == ""


def test_a_pidfile_left_behind_is_a_crash(driver: QemuHypervisor, stranger: int) -> None:
    paths = made(driver)
    paths.pidfile.write_text(f"{stranger}\n")  # the PID lives, but it is not our QEMU
    assert process.instance_pid(paths.pidfile, "i-1") is None
    seen = driver.status("i-1")
    assert seen.power is PowerState.crashed
    assert "without being asked" in seen.detail
    driver.stop("i-1")  # acknowledges the crash; kills nothing
    assert driver.status("i-1").power is PowerState.stopped
    assert not paths.pidfile.exists()
    assert os.path.exists(f"/proc/{stranger}")


def test_a_signal_in_qemu_s_log_is_a_crash(driver: QemuHypervisor) -> None:
    paths = made(driver)
    paths.qemu_log.write_text(
        "2026-01-01T00:00:00Z qemu-system-x86_64: terminating on signal 15 from pid 42 (kill)\n"
    )
    seen = driver.status("i-1")
    assert seen.power is PowerState.crashed
    assert "signal 15" in seen.detail


def test_a_death_nubes_asked_for_is_no_crash(driver: QemuHypervisor) -> None:
    paths = made(driver)
    paths.pidfile.write_text("999999999\n")
    paths.stop_marker.touch()
    assert driver.status("i-1").power is PowerState.stopped


def test_a_clean_exit_nobody_asked_for_is_a_guest_power_off(driver: QemuHypervisor) -> None:
    paths = made(driver)
    paths.qemu_log.write_text("")  # QEMU ran and removed its pidfile: the guest powered off
    assert driver.status("i-1").power is PowerState.stopped


def test_console_log_tails_the_serial_log(driver: QemuHypervisor) -> None:
    paths = made(driver)
    paths.serial_log.write_bytes(b"SeaBIOS\r\n\xffNUBES-TINY-BOOTED hostname=x\n")
    assert driver.console_log("i-1").endswith("NUBES-TINY-BOOTED hostname=x\n")
    assert driver.console_log("i-1", tail_bytes=11) == "hostname=x\n"
    assert driver.console_log("i-1", tail_bytes=0) == ""
    assert "\ufffd" in driver.console_log("i-1")  # undecodable bytes do not fail


def test_vnc_displays_are_distinct_and_stable(driver: QemuHypervisor) -> None:
    state, displays = driver.state_dir, (0, 1000)
    first, _ = made(driver, "a"), made(driver, "b")
    with vnc.allocation_lock(state):
        one = vnc.pick_display(state, "a", displays)
        two = vnc.pick_display(state, "b", displays)
        assert one != two
        assert vnc.pick_display(state, "a", displays) == one  # an instance keeps its display
    assert first.vnc_display.read_text().strip() == str(one)


def test_vnc_skips_ports_held_by_others_and_runs_out_politely(driver: QemuHypervisor) -> None:
    made(driver, "a")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        held = squatter.getsockname()[1] - 5900
        if not 0 <= held < 60000:
            pytest.skip("the kernel gave a port below 5900")
        assert not vnc.port_free(vnc_port(held))
        assert vnc.pick_display(driver.state_dir, "a", (held, held + 2)) == held + 1
        with pytest.raises(HypervisorError, match="no free VNC display"):
            vnc.pick_display(driver.state_dir, "b", (held, held + 2))
