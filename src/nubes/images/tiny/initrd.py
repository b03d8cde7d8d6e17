"""Writes the initrd: a :class:`~nubes.images.tiny.tree.Tree` as a gzip-compressed newc cpio
archive (the kernel's initramfs format; gzip because it decompresses fastest under TCG; level 6
because 9 takes six times as long for half a percent)."""

from __future__ import annotations

import gzip
from pathlib import Path

from nubes.images.tiny.cpio import write_newc
from nubes.images.tiny.tree import Tree


def write_initrd(tree: Tree, path: Path, *, mtime: int = 0) -> None:
    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as out,
    ):
        write_newc(tree.entries(), out, mtime=mtime)
