"""Which kernel modules the tiny guest carries, and in what order it loads them.

The Debian kernel package ships no ``modules.dep`` (depmod runs at install time) and the host
may lack kmod, so dependencies are read here from each module's ELF ``.modinfo`` section
(``depends=``). Output: the modules in load order (dependencies first) and a ``modules.dep``
for busybox modprobe. Reads the unpacked kernel tree; never writes to the host.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nubes.images.tiny.errors import TinyImageError

#: What the guest needs from a QEMU q35 machine with virtio devices. Their dependencies
#: (virtio, virtio_ring, scsi_mod, fat, ...) come along by themselves.
GUEST_MODULES: tuple[str, ...] = (
    "virtio_pci",  # the transport every virtio device below sits on
    "virtio_blk",  # the disk, and a config drive attached as a disk
    "virtio_scsi",  # ... or as a virtio-scsi CD-ROM (sr_mod)
    "sr_mod",
    "sd_mod",
    "virtio_net",
    "virtio_console",
    "virtio_rng",  # entropy, so nothing blocks waiting for it
    "isofs",  # config drives are ISO 9660 (or VFAT)
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "evdev",  # the ACPI power button reaches acpid as /dev/input/event*
    "button",
)


@dataclass(frozen=True)
class Module:
    name: str  # canonical: dashes become underscores ("virtio-rng" -> "virtio_rng")
    path: str  # relative to /lib/modules/<version>, e.g. "kernel/drivers/block/virtio_blk.ko"
    depends: tuple[str, ...]


def canonical(name: str) -> str:
    return name.replace("-", "_")


def modinfo(image: bytes) -> dict[str, list[str]]:
    """The key=value pairs of a 64-bit little-endian ELF module's ``.modinfo`` section."""
    if image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        raise TinyImageError("not a 64-bit little-endian ELF kernel module")
    (shoff,) = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)

    def section(index: int) -> tuple[int, int, int]:  # (name offset, file offset, size)
        base = shoff + index * shentsize
        (name,) = struct.unpack_from("<I", image, base)
        offset, size = struct.unpack_from("<QQ", image, base + 0x18)
        return name, offset, size

    _, names_at, _ = section(shstrndx)
    for index in range(shnum):
        name_off, offset, size = section(index)
        end = image.index(b"\0", names_at + name_off)
        if image[names_at + name_off : end] == b".modinfo":
            info: dict[str, list[str]] = {}
            for item in image[offset : offset + size].split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, []).append(value)
            return info
    return {}


def index_modules(modules_dir: Path) -> dict[str, str]:
    """Canonical module name -> path relative to ``modules_dir`` (``/lib/modules/<ver>``)."""
    found: dict[str, str] = {}
    for path in sorted((modules_dir / "kernel").rglob("*.ko")):
        found[canonical(path.name[: -len(".ko")])] = path.relative_to(modules_dir).as_posix()
    return found


def builtin_modules(modules_builtin: str) -> set[str]:
    """Names in a ``modules.builtin`` file ("kernel/fs/ext4/ext4.ko" per line)."""
    names = (line.rsplit("/", 1)[-1] for line in modules_builtin.split())
    return {canonical(n[: -len(".ko")]) for n in names if n.endswith(".ko")}


def resolve(
    wanted: Iterable[str],
    available: Mapping[str, str],
    builtin: set[str],
    read: Callable[[str], bytes],
) -> list[Module]:
    """``wanted`` and their dependencies in load order; built-in ones are skipped.

    ``available`` maps names to paths (:func:`index_modules`); ``read`` returns a path's bytes.
    """
    ordered: list[Module] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = canonical(name)
        if name in done or name in builtin:
            return
        if name in chain:
            raise TinyImageError(f"kernel module dependency cycle: {' -> '.join((*chain, name))}")
        if name not in available:
            raise TinyImageError(f"kernel module {name} is neither built in nor shipped")
        info = modinfo(read(available[name]))
        depends = tuple(canonical(d) for v in info.get("depends", []) for d in v.split(",") if d)
        for dep in depends:
            visit(dep, (*chain, name))
        done.add(name)
        ordered.append(Module(name, available[name], depends))

    for name in wanted:
        visit(name, ())
    return ordered


def render_modules_dep(modules: Sequence[Module]) -> str:
    """``modules.dep`` as depmod writes it: each module, then every module it needs
    (transitively), listed so that loading from the end of the list works."""
    by_name = {m.name: m for m in modules}
    position = {m.name: i for i, m in enumerate(modules)}
    lines = []
    for module in modules:
        needed: set[str] = set()
        stack = [d for d in module.depends if d in by_name]
        while stack:
            dep = stack.pop()
            if dep not in needed:
                needed.add(dep)
                stack.extend(d for d in by_name[dep].depends if d in by_name)
        deps = sorted(needed, key=position.__getitem__, reverse=True)
        lines.append(" ".join([f"{module.path}:", *(by_name[d].path for d in deps)]))
    return "".join(f"{line}\n" for line in lines)


def render_load_list(modules: Sequence[Module]) -> str:
    """One path per line, in load order: what the guest's boot script insmods."""
    return "".join(f"{m.path}\n" for m in modules)
