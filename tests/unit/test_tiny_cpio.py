"""The newc cpio writer of the tiny image: headers, alignment, entry types, trailer."""

from __future__ import annotations

import io
import stat
from pathlib import Path

from nubes.images.tiny.cpio import write_newc
from nubes.images.tiny.tree import Tree


def read_newc(blob: bytes) -> list[dict[str, object]]:
    """A reader independent of the writer: the layout from the kernel's initramfs docs."""
    entries = []
    offset = 0
    names = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize")
    names += ("devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check")
    while True:
        assert blob[offset : offset + 6] == b"070701", offset
        fields = {
            name: int(blob[offset + 6 + 8 * i : offset + 14 + 8 * i], 16)
            for i, name in enumerate(names)
        }
        name_start = offset + 110
        name = blob[name_start : name_start + fields["namesize"] - 1].decode()
        assert blob[name_start + fields["namesize"] - 1] == 0
        data_start = (name_start + fields["namesize"] + 3) & ~3
        data = blob[data_start : data_start + fields["filesize"]]
        offset = (data_start + fields["filesize"] + 3) & ~3
        if name == "TRAILER!!!":
            assert offset == len(blob)
            return entries
        entries.append({"name": name, "data": data, **fields})


def archive(tree: Tree, mtime: int = 1234) -> bytes:
    out = io.BytesIO()
    write_newc(tree.entries(), out, mtime=mtime)
    return out.getvalue()


def test_every_kind_of_entry_round_trips() -> None:
    tree = Tree()
    tree.add_file("bin/busybox", b"\x7fELF" + b"x" * 5, mode=0o755)
    tree.symlink("sbin/init", "/bin/busybox")
    tree.chardev("dev/console", 5, 1)
    tree.mkdir("tmp", 0o1777)

    entries = {e["name"]: e for e in read_newc(archive(tree))}

    assert list(entries) == ["bin", "bin/busybox", "dev", "dev/console", "sbin", "sbin/init", "tmp"]
    busybox = entries["bin/busybox"]
    assert busybox["mode"] == stat.S_IFREG | 0o755
    assert busybox["data"] == b"\x7fELF" + b"x" * 5
    assert (busybox["uid"], busybox["gid"], busybox["mtime"]) == (0, 0, 1234)
    assert entries["sbin/init"]["mode"] == stat.S_IFLNK | 0o777
    assert entries["sbin/init"]["data"] == b"/bin/busybox"
    console = entries["dev/console"]
    assert console["mode"] == stat.S_IFCHR | 0o600
    assert (console["rdevmajor"], console["rdevminor"], console["filesize"]) == (5, 1, 0)
    assert entries["tmp"]["mode"] == stat.S_IFDIR | 0o1777
    assert entries["tmp"]["nlink"] == 2


def test_inodes_are_unique_and_nonzero() -> None:
    tree = Tree()
    for i in range(5):
        tree.add_file(f"etc/f{i}", "x" * i)
    inodes = [e["ino"] for e in read_newc(archive(tree))]
    assert 0 not in inodes
    assert len(set(inodes)) == len(inodes)


def test_file_content_is_read_from_source(tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"abc")
    tree = Tree()
    tree.add_file("lib/blob", source=source)
    assert {e["name"]: e["data"] for e in read_newc(archive(tree))}["lib/blob"] == b"abc"


def test_empty_archive_is_just_the_trailer() -> None:
    assert read_newc(archive(Tree())) == []
