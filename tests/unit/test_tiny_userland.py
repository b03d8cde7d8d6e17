"""The tiny guest's userland trees (LXC rootfs and VM initrd) and the boot-script contract
the rest of nubes parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from nubes.images.tiny import ADDR_MARKER, MARKER, SHUTDOWN_MARKER
from nubes.images.tiny.kernel import Kernel
from nubes.images.tiny.kmod import Module
from nubes.images.tiny.tree import Kind
from nubes.images.tiny.userland import (
    GUEST_FILES,
    guest_file,
    initrd_tree,
    parse_applet_list,
    rootfs_tree,
)

APPLETS = parse_applet_list("bin/sh\nsbin/init\nusr/bin/[\nusr/bin/wget\nlinuxrc\nbin/busybox\n")


def test_parse_applet_list_keeps_bin_sbin_usr_only() -> None:
    assert APPLETS == ["bin/sh", "sbin/init", "usr/bin/[", "usr/bin/wget"]


@pytest.fixture
def busybox(tmp_path: Path) -> Path:
    path = tmp_path / "busybox"
    path.write_bytes(b"\x7fELF busybox")
    return path


def test_rootfs_has_init_busybox_www_and_no_kernel(busybox: Path) -> None:
    tree = rootfs_tree(busybox, APPLETS, release="test\n")

    assert tree["sbin/init"].kind is Kind.symlink
    assert tree["sbin/init"].data == b"/bin/busybox"
    assert tree["bin/busybox"].content() == b"\x7fELF busybox"
    assert tree["bin/busybox"].mode == 0o755
    assert tree["www/index.html"].content() == b"tiny\n"
    assert tree["etc/hostname"].content() == b"tiny\n"
    assert tree["etc/passwd"].content().startswith(b"root:x:0:0:")
    assert tree["tmp"].mode == 0o1777
    assert tree["etc/init.d/rcS"].mode == 0o755
    paths = {e.path for e in tree.entries()}
    assert not any(p.startswith(("lib/modules", "boot")) for p in paths)
    assert "init" not in paths
    assert all(e.kind is not Kind.chardev for e in tree.entries())


def test_initrd_adds_init_console_and_modules(busybox: Path, tmp_path: Path) -> None:
    modules_dir = tmp_path / "lib" / "modules" / "6.1.0-9-cloud-amd64"
    ko = modules_dir / "kernel" / "drivers" / "virtio" / "virtio.ko"
    ko.parent.mkdir(parents=True)
    ko.write_bytes(b"ko")
    kernel = Kernel("6.1.0-9-cloud-amd64", tmp_path / "vmlinuz", modules_dir)
    modules = [Module("virtio", "kernel/drivers/virtio/virtio.ko", ())]

    tree = initrd_tree(busybox, APPLETS, kernel, modules, release="test\n")

    assert tree["init"].data == b"/sbin/init"
    assert tree["dev/console"].device == (5, 1)
    base = "lib/modules/6.1.0-9-cloud-amd64"
    assert tree[f"{base}/kernel/drivers/virtio/virtio.ko"].content() == b"ko"
    assert tree[f"{base}/modules.dep"].content() == b"kernel/drivers/virtio/virtio.ko:\n"
    assert tree["etc/tiny/modules"].content() == b"kernel/drivers/virtio/virtio.ko\n"


def test_guest_scripts_are_shell_scripts() -> None:
    for name, (_, mode) in GUEST_FILES.items():
        if mode & 0o111:
            assert guest_file(name).startswith("#!/bin/sh\n"), name


def test_boot_script_prints_the_markers_nubes_parses() -> None:
    script = guest_file("init.sh")
    assert f'"{MARKER} hostname=$name uptime=' in script
    assert f'"{ADDR_MARKER} $nic $address"' in script
    assert f'"{SHUTDOWN_MARKER}"' in script
    assert "config-2" in script
    assert "nubes.hostname=" in script


def test_boot_script_asks_dhcp_for_the_classless_routes_its_event_script_applies() -> None:
    """dnsmasq sends option 121 (the metadata service's route) only to clients asking."""
    assert "-O staticroutes" in guest_file("init.sh")
    assert "$staticroutes" in guest_file("udhcpc.sh")


def test_inittab_runs_the_boot_script_at_start_and_shutdown() -> None:
    inittab = guest_file("inittab")
    assert "::sysinit:/etc/init.d/rcS start\n" in inittab
    assert "::shutdown:/etc/init.d/rcS stop\n" in inittab
