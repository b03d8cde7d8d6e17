"""The host tools the tiny image builder runs, and the Debian package that ships each.

Checked once, up front, so a missing tool fails the build before anything is downloaded, with
an error naming the package to install. Never installs anything itself.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nubes.images.tiny.errors import MissingTool

#: command -> the Debian package that provides it (keep scripts/debian-packages.txt in step).
TOOLS: Mapping[str, str] = {
    "apt-cache": "apt",
    "apt-get": "apt",
    "dpkg-deb": "dpkg",
    "mkfs.vfat": "dosfstools",
    "syslinux": "syslinux",
    "mcopy": "mtools",
    "qemu-img": "qemu-utils",
}
#: syslinux's master boot record code; it chain-loads the active partition's boot sector.
MBR_BIN_PATHS = (Path("/usr/lib/syslinux/mbr/mbr.bin"), Path("/usr/share/syslinux/mbr.bin"))
MBR_BIN_PACKAGE = "syslinux-common"
# mkfs.vfat lives in /usr/sbin, which an ordinary user's PATH often lacks.
_SBIN = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))


@dataclass(frozen=True)
class HostTools:
    """Absolute paths of every tool in :data:`TOOLS`, and of syslinux's ``mbr.bin``."""

    commands: Mapping[str, str]
    mbr_bin: Path

    def __getitem__(self, command: str) -> str:
        return self.commands[command]


def find_command(command: str) -> str | None:
    return shutil.which(command) or shutil.which(command, path=_SBIN)


def require_tools() -> HostTools:
    """Every tool the build needs, or :class:`MissingTool` listing all that are absent."""
    found = {command: find_command(command) for command in TOOLS}
    missing = [(command, TOOLS[command]) for command, path in found.items() if path is None]
    mbr_bin = next((p for p in MBR_BIN_PATHS if p.is_file()), None)
    if mbr_bin is None:
        missing.append(("mbr.bin", MBR_BIN_PACKAGE))
    if missing or mbr_bin is None:
        raise MissingTool(missing)
    return HostTools({c: p for c, p in found.items() if p is not None}, mbr_bin)
