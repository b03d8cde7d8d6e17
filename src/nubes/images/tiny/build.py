"""``build_tiny``: the whole build of the tiny guest image, start to finish.

Steps: check host tools -> resolve and fetch the kernel and busybox-static .debs (cached) ->
unpack them (cached) -> assemble the userland -> initrd -> bootable qcow2, and the LXC rootfs
tarball. Everything is built in a temporary directory under ``out_dir`` and renamed into place
at the end; on failure that directory is removed and ``out_dir`` is left as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nubes.images.tiny import debs
from nubes.images.tiny.disk import build_disk
from nubes.images.tiny.initrd import write_initrd
from nubes.images.tiny.kernel import guest_modules, locate_kernel
from nubes.images.tiny.tarball import write_tar_gz
from nubes.images.tiny.tools import require_tools
from nubes.images.tiny.userland import MARKER, applet_links, initrd_tree, rootfs_tree

DISK_NAME = "nubes-tiny.qcow2"
ROOTFS_NAME = "nubes-tiny-rootfs.tar.gz"
# Archive timestamps: fixed, so equal inputs give byte-equal initrds and tarballs.
MTIME = 1_700_000_000


@dataclass(frozen=True)
class TinyImage:
    disk: Path  # qcow2 that boots by itself (syslinux, kernel and initrd inside)
    rootfs: Path  # rootfs tarball (.tar.gz) for system containers
    kernel_version: str  # e.g. "6.1.0-56-cloud-amd64"
    marker: str  # the boot marker prefix the guest prints on its console


def default_cache_dir() -> Path:
    """/var/cache/nubes for root, else $XDG_CACHE_HOME/nubes (~/.cache/nubes)."""
    if os.geteuid() == 0:
        return Path("/var/cache/nubes")
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nubes"


def build_tiny(
    out_dir: Path, *, cache_dir: Path, progress: Callable[[str], None] | None = None
) -> TinyImage:
    """Build the disk image and rootfs tarball into ``out_dir`` (see the module docstring)."""
    say = progress or (lambda _message: None)
    tools = require_tools()
    out_dir.mkdir(parents=True, exist_ok=True)
    debs_dir, unpacked_dir = cache_dir / "debs", cache_dir / "tiny" / "unpacked"
    kernel_pkg, busybox_pkg = debs.resolve(say)
    kernel_root = debs.unpack(debs.fetch(kernel_pkg, debs_dir, say), unpacked_dir, say)
    busybox_root = debs.unpack(debs.fetch(busybox_pkg, debs_dir, say), unpacked_dir, say)
    debs.prune(debs_dir, unpacked_dir, (kernel_pkg, busybox_pkg))

    kernel = locate_kernel(kernel_root)
    busybox = busybox_root / "bin" / "busybox"
    applets = applet_links(busybox)
    release = (
        f"nubes-tiny kernel={kernel.version} {kernel_pkg.name}={kernel_pkg.version}"
        f" {busybox_pkg.name}={busybox_pkg.version}\n"
    )

    work = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=out_dir))
    try:
        say("building initrd")
        modules = guest_modules(kernel)
        initrd = work / "initrd.gz"
        write_initrd(
            initrd_tree(busybox, applets, kernel, modules, release=release), initrd, mtime=MTIME
        )
        say("building disk image")
        build_disk(tools, kernel=kernel.vmlinuz, initrd=initrd, work=work, out=work / DISK_NAME)
        say("building rootfs tarball")
        write_tar_gz(
            rootfs_tree(busybox, applets, release=release).entries(),
            work / ROOTFS_NAME,
            mtime=MTIME,
        )
        for name in (DISK_NAME, ROOTFS_NAME):
            os.replace(work / name, out_dir / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"built {out_dir / DISK_NAME} and {out_dir / ROOTFS_NAME}")
    return TinyImage(out_dir / DISK_NAME, out_dir / ROOTFS_NAME, kernel.version, MARKER)
