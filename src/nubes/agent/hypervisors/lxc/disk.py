"""Turn a bootable disk image (qcow2, raw, ...) into a root file system directory, once.

Steps: ``qemu-img convert`` to a sparse raw file (skipped for raw images), find the root
partition from the partition table (:mod:`.partitions`), identify its file system with
``blkid --probe``, mount it read-only through an auto-clearing loop device, copy it out with
``cp -a``, unmount in ``finally``. Everything happens inside ``scratch``, which the caller
deletes; a crash between mount and unmount leaves a mount under ``scratch`` that the image
cache unmounts before it cleans up (:func:`.host.unmount_under`).

The mount is the kernel parsing the image's file system: the images come from the image
service (uploaded by operators or tenants), so this trusts the kernel's ext4/xfs/btrfs code
with them once per image, read-only, with ``nodev,nosuid,noexec`` and no journal replay.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from nubes.agent.hypervisors.base import HypervisorError
from nubes.subp import SubpError, subp

from .host import unmount_under
from .partitions import Partition, PartitionError, root_partition

CONVERTIBLE_FORMATS = frozenset({"qcow2", "raw", "vmdk", "vdi", "vhdx", "qed"})
# File systems that carry POSIX ownership, modes and xattrs: anything else cannot be a root.
ROOT_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs"})
_NO_REPLAY = {"ext3": "noload", "ext4": "noload", "xfs": "norecovery"}
_HEAD_BYTES = 64 * 1024
LONG = 3600.0  # seconds: converting or copying a multi-gigabyte image


def _fail(message: str) -> HypervisorError:
    return HypervisorError(
        f"{message}; register the image as a rootfs tarball (.tar.gz of the root file "
        "system) for containers instead",
        retryable=False,
    )


def to_raw(image: Path, fmt: str, scratch: Path) -> Path:
    if fmt not in CONVERTIBLE_FORMATS:
        raise _fail(f"cannot convert a {fmt!r} disk image")
    if fmt == "raw":
        return image
    raw = scratch / "disk.raw"
    try:
        subp(["qemu-img", "convert", "-f", fmt, "-O", "raw", image, raw], timeout=LONG)
    except SubpError as exc:
        raise _fail(f"qemu-img could not convert {image}: {exc}") from exc
    return raw


def find_root(raw: Path) -> tuple[Partition, str]:
    with raw.open("rb") as f:
        head = f.read(_HEAD_BYTES)
    try:
        part = root_partition(head, raw.stat().st_size)
    except PartitionError as exc:
        raise _fail(f"{raw.name}: {exc}") from exc
    blkid = ["blkid", "--probe", "--offset", str(part.offset), "--match-tag", "TYPE"]
    probe = subp([*blkid, "--output", "value", raw], check=False)
    fstype = probe.stdout.strip()
    where = f"partition {part.number}" if part.number else "the whole disk"
    if fstype not in ROOT_FILESYSTEMS:
        found = f"a {fstype} file system" if fstype else "no file system blkid recognises"
        raise _fail(f"{where} of the image holds {found}")
    return part, fstype


@contextlib.contextmanager
def mounted_read_only(raw: Path, part: Partition, fstype: str, scratch: Path) -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="mnt-", dir=scratch))
    options = ["ro", "loop", f"offset={part.offset}", f"sizelimit={part.size}"]
    options += ["nodev", "nosuid", "noexec"]
    if fstype in _NO_REPLAY:
        options.append(_NO_REPLAY[fstype])
    try:
        subp(["mount", "-t", fstype, "-o", ",".join(options), raw, mnt], timeout=120)
    except SubpError as exc:
        mnt.rmdir()
        raise HypervisorError(f"cannot mount the image's root file system: {exc}") from exc
    try:
        yield mnt
    finally:
        left = unmount_under(mnt)
        if left:
            raise HypervisorError(f"could not unmount {', '.join(left)}")
        mnt.rmdir()


def extract_disk(image: Path, fmt: str, dest: Path, scratch: Path) -> None:
    """Copy the root file system of disk ``image`` into the existing directory ``dest``."""
    raw = to_raw(image, fmt, scratch)
    try:
        part, fstype = find_root(raw)
        with mounted_read_only(raw, part, fstype, scratch) as mnt:
            subp(["cp", "-a", "--one-file-system", f"{mnt}/.", f"{dest}/"], timeout=LONG)
    finally:
        if raw != image:
            raw.unlink(missing_ok=True)
