"""The tiny guest image for real: built from Debian packages (cached in default_cache_dir(), so
repeated runs download nothing), booted under QEMU TCG with no network, its boot marker read
from the serial log, powered off over QMP, and booted again with a config drive. Every QEMU
process is killed by its pid in a ``finally`` and its files removed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nubes.images.tiny import (
    MARKER,
    SHUTDOWN_MARKER,
    TinyImage,
    build_tiny,
    default_cache_dir,
)
from nubes.subp import subp

pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 90.0
POWEROFF_TIMEOUT = 60.0
QEMU = "qemu-system-x86_64"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> TinyImage:
    return build_tiny(tmp_path_factory.mktemp("tiny"), cache_dir=default_cache_dir())


class Qmp:
    """Just enough QMP: the greeting, capabilities negotiation, one command at a time."""

    def __init__(self, path: Path, deadline: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.sock.settimeout(10)
        self.reader = self.sock.makefile("r")
        assert "QMP" in json.loads(self.reader.readline())
        self.execute("qmp_capabilities")

    def execute(self, command: str) -> Any:
        self.sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
        while True:
            reply = json.loads(self.reader.readline())
            if "event" in reply:
                continue
            assert "error" not in reply, reply
            return reply["return"]

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class Guest:
    """A QEMU process booting an overlay of the image; see :func:`boot`."""

    def __init__(self, proc: subprocess.Popen[bytes], serial: Path, qmp_socket: Path) -> None:
        self.proc = proc
        self.serial = serial
        self.qmp_socket = qmp_socket
        self.started = time.monotonic()

    def log(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def wait_for_marker(self) -> tuple[str, float]:
        """The marker line and the seconds it took to appear."""
        deadline = self.started + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            for line in self.log().splitlines():
                if line.startswith(MARKER):
                    return line.strip(), time.monotonic() - self.started
            assert self.proc.poll() is None, f"qemu exited early:\n{self.log()}"
            time.sleep(0.2)
        pytest.fail(f"no {MARKER} within {BOOT_TIMEOUT} s; serial log:\n{self.log()}")

    def power_down(self) -> float:
        """system_powerdown over QMP; the seconds until QEMU exited by itself (status 0)."""
        qmp = Qmp(self.qmp_socket, time.monotonic() + 10)
        try:
            pressed = time.monotonic()
            qmp.execute("system_powerdown")
            code = self.proc.wait(timeout=POWEROFF_TIMEOUT)
        finally:
            qmp.close()
        assert code == 0, self.log()
        return time.monotonic() - pressed


@pytest.fixture
def boot(image: TinyImage) -> Iterator[Callable[..., Guest]]:
    """``boot(*extra_qemu_args) -> Guest``; every guest is killed by pid and cleaned up."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(*extra: str) -> Guest:
        # A short directory: a unix socket path must stay under 108 bytes.
        workdir = Path(tempfile.mkdtemp(prefix="nubes-tiny-"))
        overlay, serial, qmp = workdir / "disk.qcow2", workdir / "serial.log", workdir / "qmp"
        subp(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image.disk, overlay])
        argv = [QEMU, "-machine", "q35", "-accel", "tcg", "-m", "256", "-nographic"]
        argv += ["-nic", "none", "-drive", f"file={overlay},if=virtio,format=qcow2"]
        argv += ["-serial", f"file:{serial}", "-display", "none", "-monitor", "none"]
        argv += ["-qmp", f"unix:{qmp},server,nowait", *extra]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        started.append((proc, workdir))
        return Guest(proc, serial, qmp)

    try:
        yield start
    finally:
        for proc, workdir in started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            if proc.stderr is not None:
                proc.stderr.close()
            shutil.rmtree(workdir, ignore_errors=True)


def hostname_in(marker_line: str) -> str:
    match = re.fullmatch(rf"{MARKER} hostname=(\S+) uptime=([0-9.]+)", marker_line)
    assert match, marker_line
    return match.group(1)


def test_image_files_and_sizes(image: TinyImage) -> None:
    assert image.marker == MARKER
    assert re.fullmatch(r"\d+\.\d+\.\d+-\d+-cloud-amd64", image.kernel_version)
    info = json.loads(subp(["qemu-img", "info", "--output=json", image.disk]).stdout)
    assert info["format"] == "qcow2"
    assert image.disk.stat().st_size < 40 << 20
    assert image.rootfs.stat().st_size < 10 << 20
    assert not list(image.disk.parent.glob(".tiny-build-*"))  # no temporary left behind


def test_rootfs_tarball_holds_init_busybox_and_www(image: TinyImage) -> None:
    with tarfile.open(image.rootfs) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["sbin/init"].issym()
    assert members["sbin/init"].linkname == "/bin/busybox"
    assert members["bin/busybox"].isfile()
    assert members["www/index.html"].isfile()
    assert members["etc/init.d/rcS"].mode & 0o111
    assert not any(name.startswith(("lib/modules", "boot/")) for name in members)


def test_boots_to_the_marker_and_powers_off_over_acpi(boot: Callable[..., Guest]) -> None:
    guest = boot()
    line, seconds = guest.wait_for_marker()
    assert hostname_in(line) == "tiny"
    print(f"TCG boot to marker: {seconds:.1f} s")

    seconds = guest.power_down()

    print(f"system_powerdown to QEMU exit: {seconds:.1f} s")
    log = guest.log()
    assert log.count(MARKER) == 1
    assert SHUTDOWN_MARKER in log  # init ran its shutdown actions: a clean power-off


def test_config_drive_sets_the_hostname(boot: Callable[..., Guest], tmp_path: Path) -> None:
    meta = tmp_path / "config" / "openstack" / "latest" / "meta_data.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"uuid": "d0c5a4e0", "hostname": "cfgdrive-test", "name": "x"}))
    iso = tmp_path / "config-2.iso"
    subp(["genisoimage", "-quiet", "-V", "config-2", "-r", "-J", "-o", iso, tmp_path / "config"])

    guest = boot("-drive", f"file={iso},if=virtio,format=raw,readonly=on")
    line, _ = guest.wait_for_marker()

    assert hostname_in(line) == "cfgdrive-test"


def test_a_second_build_reuses_the_cache(image: TinyImage, tmp_path: Path) -> None:
    messages: list[str] = []
    started = time.monotonic()
    again = build_tiny(tmp_path, cache_dir=default_cache_dir(), progress=messages.append)
    print(f"warm build: {time.monotonic() - started:.1f} s")
    assert not [m for m in messages if m.startswith(("downloading", "unpacking"))], messages
    assert again.kernel_version == image.kernel_version
