"""Find the root file system inside a raw disk image: MBR and GPT partition tables read in
pure Python from the image's first sectors (no loop device, no sfdisk).

Only the choice lives here; copying the file system out is :mod:`.disk`'s job.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

SECTOR = 512  # disk images for clouds use 512-byte logical sectors

# Partitions that never hold a root file system.
_MBR_SKIP = {0x00, 0x05, 0x0F, 0x85, 0x82, 0xEF}  # empty, extended (x3), swap, EFI
_GPT_SKIP = {
    uuid.UUID("00000000-0000-0000-0000-000000000000"),  # unused entry
    uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),  # EFI system
    uuid.UUID("21686148-6449-6e6f-744e-656564454649"),  # BIOS boot
    uuid.UUID("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"),  # Linux swap
    uuid.UUID("bc13c2ff-59e6-4262-a352-b275fd6f7172"),  # extended boot loader (/boot)
}
# The discoverable-partitions root types, preferred over "largest wins" when present.
_GPT_ROOT = {
    uuid.UUID("4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),  # x86-64
    uuid.UUID("b921b045-1df0-41c3-af44-4c6f280d3fae"),  # arm64
}


@dataclass(frozen=True)
class Partition:
    number: int  # 1-based, 0 for "the whole disk is one file system"
    offset: int  # bytes
    size: int  # bytes
    type: str  # "83" (MBR hex) or a GPT type GUID


class PartitionError(ValueError):
    """The partition table is damaged or holds nothing that could be a root file system."""


def _gpt(head: bytes, disk_size: int) -> list[tuple[Partition, bool]]:
    header = head[SECTOR : 2 * SECTOR]
    if header[:8] != b"EFI PART":
        raise PartitionError("protective MBR but no GPT header at LBA 1")
    entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
    start = entries_lba * SECTOR
    if entry_size < 128 or count > 1024 or start + count * entry_size > len(head):
        raise PartitionError("GPT partition entry array out of range")
    found = []
    for index in range(count):
        entry = head[start + index * entry_size : start + (index + 1) * entry_size]
        type_guid = uuid.UUID(bytes_le=entry[:16])
        first, last = struct.unpack_from("<QQ", entry, 32)
        if type_guid in _GPT_SKIP or last < first:
            continue
        part = Partition(index + 1, first * SECTOR, (last - first + 1) * SECTOR, str(type_guid))
        if part.offset + part.size > disk_size:
            raise PartitionError(f"GPT partition {index + 1} ends beyond the disk")
        found.append((part, type_guid in _GPT_ROOT))
    return found


def _mbr(head: bytes, disk_size: int) -> list[tuple[Partition, bool]]:
    found = []
    for index in range(4):
        entry = head[446 + 16 * index : 446 + 16 * (index + 1)]
        ptype = entry[4]
        first, sectors = struct.unpack_from("<II", entry, 8)
        if ptype in _MBR_SKIP or sectors == 0:
            continue
        part = Partition(index + 1, first * SECTOR, sectors * SECTOR, f"{ptype:02x}")
        if part.offset + part.size > disk_size:
            raise PartitionError(f"MBR partition {index + 1} ends beyond the disk")
        found.append((part, False))
    return found


def root_partition(head: bytes, disk_size: int) -> Partition:
    """The partition to use as the root file system, given the image's first sectors
    (at least 34 KiB: MBR, GPT header and a 128-entry array) and its size.

    No partition table: the whole disk. GPT: a discoverable root partition if any, else the
    largest partition that is not EFI, BIOS boot, /boot or swap. MBR: the largest primary
    partition that is not extended, EFI or swap (logical partitions are not followed)."""
    if len(head) < 2 * SECTOR or head[510:512] != b"\x55\xaa":
        return Partition(0, 0, disk_size, "")
    types = [head[446 + 16 * i + 4] for i in range(4)]
    if 0xEE in types:
        candidates = _gpt(head, disk_size)
    else:
        candidates = _mbr(head, disk_size)
        # A boot-sector signature over a bare file system (FAT, some ext layouts) is not an
        # MBR: no sane entry means the whole disk.
        if not candidates and not any(types):
            return Partition(0, 0, disk_size, "")
    if not candidates:
        raise PartitionError("the partition table has no partition that could be a root")
    preferred = [p for p, is_root in candidates if is_root]
    return max(preferred or [p for p, _ in candidates], key=lambda p: p.size)
