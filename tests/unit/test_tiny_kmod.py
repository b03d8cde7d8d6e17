"""Kernel module selection for the tiny guest: .modinfo parsing, dependency order,
modules.dep, and the kernel located in an unpacked package."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from nubes.images.tiny import kmod
from nubes.images.tiny.errors import TinyImageError
from nubes.images.tiny.kernel import guest_modules, locate_kernel


def elf_module(modinfo: dict[str, str]) -> bytes:
    """A minimal 64-bit little-endian ELF relocatable with a .modinfo section."""
    info = b"".join(f"{k}={v}".encode() + b"\0" for k, v in modinfo.items())
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    body_start = 64
    info_at, strtab_at = body_start, body_start + len(info)
    shoff = (strtab_at + len(shstrtab) + 7) & ~7
    header = b"\x7fELF" + bytes((2, 1, 1)) + b"\0" * 9
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 2)

    def section(name: int, kind: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, kind, 0, 0, offset, size, 0, 0, 1, 0)

    sections = section(0, 0, 0, 0) + section(1, 1, info_at, len(info))
    sections += section(10, 3, strtab_at, len(shstrtab))
    body = header + info + shstrtab
    return body + b"\0" * (shoff - len(body)) + sections


def test_modinfo_reads_depends_and_repeated_keys() -> None:
    image = elf_module({"license": "GPL", "depends": "virtio,virtio_ring", "alias": "a"})
    info = kmod.modinfo(image)
    assert info["depends"] == ["virtio,virtio_ring"]
    assert info["license"] == ["GPL"]


def test_modinfo_refuses_what_is_not_elf64() -> None:
    with pytest.raises(TinyImageError, match="ELF"):
        kmod.modinfo(b"MZ\0\0" + b"\0" * 60)


FAKE = {
    "virtio_blk": ("kernel/drivers/block/virtio_blk.ko", "virtio,virtio_ring"),
    "virtio": ("kernel/drivers/virtio/virtio.ko", ""),
    "virtio_ring": ("kernel/drivers/virtio/virtio_ring.ko", "virtio"),
    "virtio_rng": ("kernel/drivers/char/hw_random/virtio-rng.ko", "virtio,virtio_ring"),
    "crc": ("kernel/lib/crc.ko", ""),
}


def resolve(wanted: list[str], builtin: frozenset[str] = frozenset()) -> list[kmod.Module]:
    available = {name: path for name, (path, _) in FAKE.items()}
    images = {path: elf_module({"depends": deps}) for path, deps in FAKE.values()}
    return kmod.resolve(wanted, available, set(builtin), images.__getitem__)


def test_dependencies_load_first_and_once() -> None:
    order = [m.name for m in resolve(["virtio_blk", "virtio-rng"])]
    assert order == ["virtio", "virtio_ring", "virtio_blk", "virtio_rng"]


def test_builtin_modules_are_skipped() -> None:
    order = [m.name for m in resolve(["virtio_blk"], frozenset({"virtio", "virtio_ring"}))]
    assert order == ["virtio_blk"]


def test_a_module_that_does_not_exist_is_an_error() -> None:
    with pytest.raises(TinyImageError, match="nowhere_mod is neither built in nor shipped"):
        resolve(["nowhere_mod"])


def test_modules_dep_lists_transitive_dependencies_last_loaded_first() -> None:
    text = kmod.render_modules_dep(resolve(["virtio_blk", "crc"]))
    assert text.splitlines() == [
        "kernel/drivers/virtio/virtio.ko:",
        "kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko "
        "kernel/drivers/virtio/virtio.ko",
        "kernel/lib/crc.ko:",
    ]


def test_load_list_is_one_path_per_line_in_order() -> None:
    assert kmod.render_load_list(resolve(["virtio_ring"])) == (
        "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n"
    )


def test_builtin_modules_file() -> None:
    text = "kernel/fs/ext4/ext4.ko\nkernel/drivers/char/hw_random/virtio-rng.ko\n"
    assert kmod.builtin_modules(text) == {"ext4", "virtio_rng"}


def fake_kernel_package(root: Path, version: str = "6.1.0-99-cloud-amd64") -> Path:
    (root / "boot").mkdir(parents=True)
    (root / "boot" / f"vmlinuz-{version}").write_bytes(b"kernel")
    modules = root / "lib" / "modules" / version
    for path, deps in FAKE.values():
        (modules / path).parent.mkdir(parents=True, exist_ok=True)
        (modules / path).write_bytes(elf_module({"depends": deps}))
    (modules / "modules.builtin").write_text("kernel/lib/crc.ko\n")
    return root


def test_locate_kernel_and_pick_its_modules(tmp_path: Path) -> None:
    kernel = locate_kernel(fake_kernel_package(tmp_path))
    assert kernel.version == "6.1.0-99-cloud-amd64"
    assert kernel.vmlinuz.read_bytes() == b"kernel"
    modules = guest_modules(kernel, ("virtio_rng", "crc"))
    assert [m.path for m in modules] == [
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/char/hw_random/virtio-rng.ko",
    ]


def test_locate_kernel_needs_exactly_one_vmlinuz(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    with pytest.raises(TinyImageError, match="found 0"):
        locate_kernel(tmp_path)
