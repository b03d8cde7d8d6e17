"""What the host offers LXC, and what is mounted where: read from /proc and /sys.

The parsers are pure functions of the file text (unit-tested); the thin readers around them
are the only I/O. Nothing here changes the host except :func:`unmount_under`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from nubes.subp import SubpError, subp

from .config import COMMON_CONF, CgroupVersion

PROC_FILESYSTEMS = Path("/proc/filesystems")
PROC_MOUNTINFO = Path("/proc/self/mountinfo")
CGROUP_ROOT = Path("/sys/fs/cgroup")
REQUIRED_CONTROLLERS = ("memory", "cpu")


def filesystems(text: str) -> set[str]:
    """File system types from /proc/filesystems (``nodev overlay``, ``ext4``)."""
    return {line.split()[-1] for line in text.splitlines() if line.strip()}


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \040 \011 \012 \134.
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_points(mountinfo: str) -> list[str]:
    """Mount points, in mount order, from /proc/<pid>/mountinfo."""
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.append(_unescape(fields[4]))
    return points


def mounts_under(mountinfo: str, root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest (most recently mounted) first."""
    base = os.path.normpath(str(root))
    found = [
        p for p in mount_points(mountinfo) if p == base or p.startswith(base.rstrip("/") + "/")
    ]
    return list(reversed(found))


def cgroup_v1_controllers(mountinfo: str) -> set[str]:
    """Controllers mounted as cgroup v1 hierarchies (from the super options field)."""
    found: set[str] = set()
    for line in mountinfo.splitlines():
        _, sep, post = line.partition(" - ")
        if not sep:
            continue
        fstype, _source, *rest = post.split()
        if fstype == "cgroup" and rest:
            found.update(rest[0].split(","))
    return found


def detect_cgroup(mountinfo: str, unified_controllers: str | None) -> CgroupVersion | str:
    """The layout LXC will put limits in, or why neither works.

    ``unified_controllers`` is /sys/fs/cgroup/cgroup.controllers (None when absent: the
    unified hierarchy is not mounted there, so the host runs v1 or hybrid)."""
    if unified_controllers is not None:
        have = set(unified_controllers.split())
        missing = [c for c in REQUIRED_CONTROLLERS if c not in have]
        if missing:
            return f"cgroup v2 controllers not available: {', '.join(missing)}"
        return CgroupVersion.v2
    have = cgroup_v1_controllers(mountinfo)
    missing = [c for c in REQUIRED_CONTROLLERS if c not in have]
    if missing:
        return f"no cgroup v2 at {CGROUP_ROOT} and cgroup v1 lacks: {', '.join(missing)}"
    return CgroupVersion.v1


def read_cgroup_layout() -> CgroupVersion | str:
    controllers = CGROUP_ROOT / "cgroup.controllers"
    unified = controllers.read_text() if controllers.exists() else None
    return detect_cgroup(PROC_MOUNTINFO.read_text(), unified)


def unsupported_reason() -> str | None:
    """None when this host can run nubes' LXC containers, else why not."""
    if shutil.which("lxc-start") is None:
        return "lxc-start not found (install the Debian package lxc)"
    if os.geteuid() != 0:
        return "the lxc driver runs privileged containers and needs root"
    if not COMMON_CONF.exists():
        return f"{COMMON_CONF} is missing (lxc package incomplete)"
    try:
        fs = filesystems(PROC_FILESYSTEMS.read_text())
    except OSError as exc:
        return f"cannot read {PROC_FILESYSTEMS}: {exc}"
    if "overlay" not in fs:
        return "the kernel has no overlay file system (modprobe overlay?)"
    if not fs & {"cgroup", "cgroup2"}:
        return "the kernel has no cgroup support"
    layout = read_cgroup_layout()
    return None if isinstance(layout, CgroupVersion) else layout


def unmount_under(root: Path) -> list[str]:
    """Unmount everything at or below ``root`` (lazily if busy); returns what is still
    mounted afterwards, which the caller must treat as an error before deleting files."""
    for point in mounts_under(PROC_MOUNTINFO.read_text(), root):
        try:
            subp(["umount", point], timeout=60)
        except SubpError:
            subp(["umount", "--lazy", point], timeout=60, check=False)
    return mounts_under(PROC_MOUNTINFO.read_text(), root)
