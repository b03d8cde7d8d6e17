"""The guest userland, as a :class:`~nubes.images.tiny.tree.Tree`: busybox and its applet
links, busybox init with the nubes boot script (``guest/init.sh``), and the few /etc files a
shell system needs. :func:`rootfs_tree` is the LXC rootfs; :func:`initrd_tree` adds what a VM
needs (/init, the console device, kernel modules). The guest-visible contract (marker lines,
hostname order, signals) is written down at the top of ``guest/init.sh``.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path, PurePosixPath

from nubes.images.tiny.errors import TinyImageError
from nubes.images.tiny.kernel import Kernel
from nubes.images.tiny.kmod import Module, render_load_list, render_modules_dep
from nubes.images.tiny.tree import Tree, normalise
from nubes.subp import subp

MARKER = "NUBES-TINY-BOOTED"
ADDR_MARKER = "NUBES-TINY-ADDR"
SHUTDOWN_MARKER = "NUBES-TINY-SHUTDOWN"
DEFAULT_HOSTNAME = "tiny"
BUSYBOX = "bin/busybox"

#: package data file (in guest/) -> (path in the guest, mode)
GUEST_FILES: dict[str, tuple[str, int]] = {
    "init.sh": ("etc/init.d/rcS", 0o755),
    "inittab": ("etc/inittab", 0o644),
    "udhcpc.sh": ("etc/udhcpc/default.script", 0o755),
    "power-button.sh": ("etc/acpi/PWRF/00000080", 0o755),
}
STATIC_FILES: dict[str, str] = {
    "etc/hostname": f"{DEFAULT_HOSTNAME}\n",
    "etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{DEFAULT_HOSTNAME}\n",
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
    "etc/shells": "/bin/sh\n/bin/ash\n",
    "etc/profile": 'export PATH=/sbin:/usr/sbin:/bin:/usr/bin\nexport PS1="\\h:\\w\\$ "\n',
    "etc/resolv.conf": "",
    "www/index.html": f"{DEFAULT_HOSTNAME}\n",
}
DIRECTORIES = ("dev", "proc", "sys", "run", "root", "mnt/config", "var/log", "etc/tiny")


def parse_applet_list(text: str) -> list[str]:
    """``busybox --list-full`` output ("usr/bin/[", "sbin/init", ...) as tree paths."""
    links = []
    for line in text.split():
        path = normalise(line)
        if path == BUSYBOX or PurePosixPath(path).parts[0] not in ("bin", "sbin", "usr"):
            continue
        links.append(path)
    return links


def applet_links(busybox: Path) -> list[str]:
    """Where busybox wants its applets linked, from the binary itself (static, runs here)."""
    links = parse_applet_list(subp([busybox, "--list-full"], timeout=30).stdout)
    if "sbin/init" not in links:
        raise TinyImageError(f"{busybox} has no init applet")
    return links


def guest_file(name: str) -> str:
    return (resources.files("nubes.images.tiny") / "guest" / name).read_text()


def rootfs_tree(busybox: Path, applets: Sequence[str], *, release: str) -> Tree:
    """The userland both guests share; on its own, the LXC rootfs (init is /sbin/init)."""
    tree = Tree()
    for directory in DIRECTORIES:
        tree.mkdir(directory)
    tree.mkdir("tmp", 0o1777)
    tree.mkdir("root", 0o700)
    tree.add_file(BUSYBOX, source=busybox, mode=0o755)
    for link in applets:
        tree.symlink(link, f"/{BUSYBOX}")
    for name, (path, mode) in GUEST_FILES.items():
        tree.add_file(path, guest_file(name), mode=mode)
    for path, text in STATIC_FILES.items():
        tree.add_file(path, text)
    tree.add_file("etc/tiny/release", release)
    return tree


def initrd_tree(
    busybox: Path,
    applets: Sequence[str],
    kernel: Kernel,
    modules: Sequence[Module],
    *,
    release: str,
) -> Tree:
    """The VM's whole userland, unpacked by the kernel as initramfs: the rootfs plus /init,
    /dev/console (the kernel opens it before devtmpfs is mounted) and the kernel modules."""
    tree = rootfs_tree(busybox, applets, release=release)
    tree.symlink("init", "/sbin/init")
    tree.chardev("dev/console", 5, 1)
    tree.chardev("dev/null", 1, 3, 0o666)
    base = f"lib/modules/{kernel.version}"
    for module in modules:
        tree.add_file(f"{base}/{module.path}", source=kernel.modules_dir / module.path)
    tree.add_file(f"{base}/modules.dep", render_modules_dep(modules))
    builtin = kernel.modules_dir / "modules.builtin"
    if builtin.exists():
        tree.add_file(f"{base}/modules.builtin", source=builtin)
    tree.add_file("etc/tiny/modules", render_load_list(modules))
    return tree
