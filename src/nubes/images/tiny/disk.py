"""The bootable disk: an MBR (syslinux's boot code) and one active FAT16 partition holding
syslinux, its configuration, the kernel and the initrd, converted to qcow2.

Made without mounting anything and without loop devices: ``mkfs.vfat`` on a file, ``syslinux
--install`` and ``mcopy`` on that unmounted file, the MBR written here, the pieces joined here,
then ``qemu-img convert``. Everything happens inside the work directory it is given.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

from nubes.images.tiny.tools import HostTools
from nubes.subp import subp

SECTOR = 512
PARTITION_START = 2048  # sectors: the customary 1 MiB alignment
PARTITION_TYPE_FAT16_LBA = 0x0E
VOLUME_LABEL = "NUBESTINY"
VOLUME_ID = "4e554245"  # fixed, so equal inputs make equal images
DISK_SIGNATURE = 0x4E554245
KERNEL_CMDLINE = "console=tty0 console=ttyS0,115200 quiet"
_MIB = 1 << 20


def render_syslinux_cfg(cmdline: str = KERNEL_CMDLINE) -> str:
    return (
        "DEFAULT tiny\n"
        "PROMPT 0\n"
        "TIMEOUT 0\n"
        "LABEL tiny\n"
        "  KERNEL /vmlinuz\n"
        "  INITRD /initrd.gz\n"
        f"  APPEND {cmdline}\n"
    )


def chs(lba: int) -> bytes:
    """The 3-byte CHS address of ``lba`` (255 heads, 63 sectors; clamped past cylinder 1023)."""
    cylinder, rest = divmod(lba, 255 * 63)
    head, sector = divmod(rest, 63)
    if cylinder > 1023:
        cylinder, head, sector = 1023, 254, 62
    return bytes((head, (sector + 1) | ((cylinder >> 2) & 0xC0), cylinder & 0xFF))


def master_boot_record(boot_code: bytes, start: int, sectors: int) -> bytes:
    """Sector 0: boot code, disk signature, one active partition of ``sectors`` at ``start``."""
    if len(boot_code) > 440:
        raise ValueError(f"MBR boot code is {len(boot_code)} bytes; at most 440 fit")
    entry = (
        b"\x80"
        + chs(start)
        + bytes((PARTITION_TYPE_FAT16_LBA,))
        + chs(start + sectors - 1)
        + struct.pack("<II", start, sectors)
    )
    return (
        boot_code.ljust(440, b"\0")
        + struct.pack("<IH", DISK_SIGNATURE, 0)
        + entry
        + b"\0" * 48
        + b"\x55\xaa"
    )


def partition_size(payload: int) -> int:
    """Bytes for a FAT partition holding ``payload`` bytes: a quarter spare plus 2 MiB for
    the file system and syslinux, in whole MiB, at least 16 MiB (FAT16's comfortable floor)."""
    wanted = payload + payload // 4 + 2 * _MIB
    return max(16 * _MIB, -(-wanted // _MIB) * _MIB)


def build_disk(tools: HostTools, *, kernel: Path, initrd: Path, work: Path, out: Path) -> None:
    """Write the bootable qcow2 ``out``, using ``work`` for the intermediate raw images."""
    part = work / "partition.img"
    size = partition_size(kernel.stat().st_size + initrd.stat().st_size)
    with part.open("wb") as f:
        f.truncate(size)
    mkfs = [tools["mkfs.vfat"], "-F", "16", "-n", VOLUME_LABEL, "-i", VOLUME_ID]
    subp([*mkfs, "-h", str(PARTITION_START), part])
    subp([tools["syslinux"], "--install", part])
    config = work / "syslinux.cfg"
    config.write_text(render_syslinux_cfg())
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}
    for source, name in ((config, "syslinux.cfg"), (kernel, "vmlinuz"), (initrd, "initrd.gz")):
        subp([tools["mcopy"], "-o", "-i", part, source, f"::/{name}"], env=env)

    raw = work / "disk.raw"
    with raw.open("wb") as disk, part.open("rb") as fat:
        disk.write(
            master_boot_record(tools.mbr_bin.read_bytes()[:440], PARTITION_START, size // SECTOR)
        )
        disk.seek(PARTITION_START * SECTOR)
        shutil.copyfileobj(fat, disk, _MIB)
    part.unlink()
    subp([tools["qemu-img"], "convert", "-q", "-f", "raw", "-O", "qcow2", raw, out], timeout=300)
    raw.unlink()
