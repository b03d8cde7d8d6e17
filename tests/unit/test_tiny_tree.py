"""The in-memory guest tree and its tarball writer."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from nubes.images.tiny.tarball import write_tar_gz
from nubes.images.tiny.tree import Kind, Tree, normalise


@pytest.mark.parametrize(
    ("given", "expected"),
    [("/etc//hosts", "etc/hosts"), ("./bin/sh", "bin/sh"), ("www/index.html", "www/index.html")],
)
def test_normalise(given: str, expected: str) -> None:
    assert normalise(given) == expected


@pytest.mark.parametrize("bad", ["/", "", "../etc", "etc/../../x"])
def test_normalise_refuses_escapes(bad: str) -> None:
    with pytest.raises(ValueError, match="not a path inside the tree"):
        normalise(bad)


def test_parents_are_created_and_listed_first() -> None:
    tree = Tree()
    tree.add_file("etc/init.d/rcS", "#!/bin/sh\n", mode=0o755)
    paths = [e.path for e in tree.entries()]
    assert paths == ["etc", "etc/init.d", "etc/init.d/rcS"]
    assert tree["etc"].kind is Kind.dir
    assert tree["etc"].mode == 0o755


def test_a_file_cannot_become_a_directory() -> None:
    tree = Tree()
    tree.add_file("etc", "oops")
    with pytest.raises(ValueError, match="not a directory"):
        tree.add_file("etc/hosts", "")
    with pytest.raises(ValueError, match="already a file"):
        tree.mkdir("etc")


def test_later_files_replace_earlier_ones() -> None:
    tree = Tree()
    tree.add_file("www/index.html", "a")
    tree.add_file("www/index.html", "b")
    assert tree["www/index.html"].content() == b"b"


def test_tarball_holds_files_links_and_dirs_owned_by_root(tmp_path: Path) -> None:
    tree = Tree()
    tree.add_file("bin/busybox", b"elf", mode=0o755)
    tree.symlink("sbin/init", "/bin/busybox")
    tree.mkdir("tmp", 0o1777)
    tree.chardev("dev/console", 5, 1)  # left out: LXC makes /dev
    path = tmp_path / "rootfs.tar.gz"

    write_tar_gz(tree.entries(), path, mtime=42)

    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"bin", "bin/busybox", "dev", "sbin", "sbin/init", "tmp"}
        assert members["sbin/init"].issym()
        assert members["sbin/init"].linkname == "/bin/busybox"
        assert members["tmp"].mode == 0o1777
        assert all(m.uid == 0 and m.gid == 0 and m.mtime == 42 for m in members.values())
        extracted = tar.extractfile("bin/busybox")
        assert extracted is not None
        assert extracted.read() == b"elf"
