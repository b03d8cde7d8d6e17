"""The tiny image's boot sector, partition sizing and syslinux configuration."""

from __future__ import annotations

import struct

import pytest

from nubes.images.tiny.disk import (
    DISK_SIGNATURE,
    KERNEL_CMDLINE,
    PARTITION_TYPE_FAT16_LBA,
    chs,
    master_boot_record,
    partition_size,
    render_syslinux_cfg,
)

MIB = 1 << 20


def test_master_boot_record_layout() -> None:
    code = b"\xfa" * 440
    mbr = master_boot_record(code, 2048, 40960)

    assert len(mbr) == 512
    assert mbr[:440] == code
    assert struct.unpack_from("<I", mbr, 440)[0] == DISK_SIGNATURE
    entry = mbr[446:462]
    assert entry[0] == 0x80  # active: syslinux's mbr.bin boots it
    assert entry[4] == PARTITION_TYPE_FAT16_LBA
    assert struct.unpack_from("<II", entry, 8) == (2048, 40960)
    assert mbr[462:510] == b"\0" * 48  # the other three entries are empty
    assert mbr[510:] == b"\x55\xaa"


def test_short_boot_code_is_padded_and_long_refused() -> None:
    assert master_boot_record(b"\x90", 2048, 8)[1:440] == b"\0" * 439
    with pytest.raises(ValueError, match="at most 440"):
        master_boot_record(b"\0" * 441, 2048, 8)


@pytest.mark.parametrize(
    ("lba", "expected"),
    [
        (0, bytes((0, 1, 0))),
        (2048, bytes((32, 33, 0))),  # cylinder 0, head 32, sector 33
        (255 * 63 * 1023 + 5, bytes((0, 6 | 0xC0, 0xFF))),  # cylinder 1023: high bits in byte 1
        (10**9, bytes((254, 63 | 0xC0, 0xFF))),  # beyond CHS: the customary 1023/254/63
    ],
)
def test_chs(lba: int, expected: bytes) -> None:
    assert chs(lba) == expected


def test_partition_size_is_whole_mebibytes_with_room() -> None:
    assert partition_size(1000) == 16 * MIB
    size = partition_size(20 * MIB)
    assert size % MIB == 0
    assert size >= 20 * MIB + 5 * MIB


def test_syslinux_cfg_boots_the_kernel_with_a_serial_console() -> None:
    cfg = render_syslinux_cfg()
    assert "KERNEL /vmlinuz" in cfg
    assert "INITRD /initrd.gz" in cfg
    assert f"APPEND {KERNEL_CMDLINE}\n" in cfg
    assert "console=ttyS0" in KERNEL_CMDLINE
    assert "TIMEOUT 0" in cfg
    assert "PROMPT 0" in cfg
