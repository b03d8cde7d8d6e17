"""The kernel inside an unpacked ``linux-image-*`` package: where its vmlinuz and modules are,
which version it is, and which of its modules the guest loads. Reads the tree; writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nubes.images.tiny import kmod
from nubes.images.tiny.errors import TinyImageError


@dataclass(frozen=True)
class Kernel:
    version: str  # "6.1.0-56-cloud-amd64", as uname -r says it
    vmlinuz: Path
    modules_dir: Path  # .../lib/modules/<version>


def locate_kernel(root: Path) -> Kernel:
    """The one kernel in ``root`` (a ``dpkg-deb -x`` of a linux-image package)."""
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise TinyImageError(f"expected one boot/vmlinuz-* in {root}, found {len(images)}")
    version = images[0].name.removeprefix("vmlinuz-")
    for base in (root / "lib" / "modules", root / "usr" / "lib" / "modules"):
        if (base / version).is_dir():
            return Kernel(version, images[0], base / version)
    raise TinyImageError(f"no lib/modules/{version} in {root}")


def guest_modules(
    kernel: Kernel, wanted: tuple[str, ...] = kmod.GUEST_MODULES
) -> list[kmod.Module]:
    """``wanted`` and their dependencies, in load order, skipping built-in ones."""
    builtin_file = kernel.modules_dir / "modules.builtin"
    builtin = kmod.builtin_modules(builtin_file.read_text() if builtin_file.exists() else "")
    available = kmod.index_modules(kernel.modules_dir)
    return kmod.resolve(wanted, available, builtin, lambda p: (kernel.modules_dir / p).read_bytes())
