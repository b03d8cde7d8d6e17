"""A writer of "newc" cpio archives (SVR4 without CRC), the format the kernel unpacks as
initramfs. Written here so the initrd needs neither the ``cpio`` tool nor root privileges for
its device nodes. Every entry is owned by root; hard links are never produced.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from typing import Protocol

from nubes.images.tiny.tree import Entry, Kind

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


_TYPE_BITS = {
    Kind.dir: stat.S_IFDIR,
    Kind.file: stat.S_IFREG,
    Kind.symlink: stat.S_IFLNK,
    Kind.chardev: stat.S_IFCHR,
}


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _record(
    name: str,
    *,
    ino: int,
    mode: int,
    nlink: int,
    mtime: int,
    data: bytes = b"",
    rdev: tuple[int, int] = (0, 0),
) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = MAGIC + b"".join(b"%08X" % value for value in fields)
    head = header + encoded
    return head + _pad(len(head)) + data + _pad(len(data))


def write_newc(entries: Iterable[Entry], out: Sink, *, mtime: int = 0) -> None:
    """Write ``entries`` (parents first) and the trailer to ``out``."""
    for ino, entry in enumerate(entries, start=1):
        data = entry.content() if entry.kind in (Kind.file, Kind.symlink) else b""
        out.write(
            _record(
                entry.path,
                ino=ino,
                mode=_TYPE_BITS[entry.kind] | entry.mode,
                nlink=2 if entry.kind is Kind.dir else 1,
                mtime=mtime,
                data=data,
                rdev=entry.device,
            )
        )
    out.write(_record(TRAILER, ino=0, mode=0, nlink=1, mtime=0))
