"""Writes a :class:`~nubes.images.tiny.tree.Tree` as a gzip-compressed tarball, the rootfs
format the LXC driver unpacks. Entries are owned by root (numeric and by name); device nodes
are left out (LXC populates /dev, and unprivileged containers cannot use them anyway).
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterable
from pathlib import Path

from nubes.images.tiny.tree import Entry, Kind

_TYPES = {Kind.dir: tarfile.DIRTYPE, Kind.file: tarfile.REGTYPE, Kind.symlink: tarfile.SYMTYPE}


def write_tar_gz(entries: Iterable[Entry], path: Path, *, mtime: int = 0) -> None:
    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for entry in entries:
            if entry.kind not in _TYPES:
                continue
            info = tarfile.TarInfo(entry.path)
            info.type = _TYPES[entry.kind]
            info.mode = entry.mode
            info.mtime = mtime
            info.uname = info.gname = "root"
            if entry.kind is Kind.symlink:
                info.linkname = entry.data.decode()
                tar.addfile(info)
            elif entry.kind is Kind.file:
                data = entry.content()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
