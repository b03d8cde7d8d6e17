"""An in-memory file tree: the guest userland as data, before it becomes an archive.

The initrd (newc cpio) and the LXC rootfs (tarball) are both written from a :class:`Tree`, so
they hold the same entries, owned by root, with device nodes that need no privilege to make.
This module never writes to the host; it reads a file's content only when an archive writer
asks for it (entries added with ``source=``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath


class Kind(StrEnum):
    dir = "dir"
    file = "file"
    symlink = "symlink"
    chardev = "chardev"


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the root, no leading slash: "bin/busybox"
    kind: Kind
    mode: int  # permission bits only, e.g. 0o755
    data: bytes = b""  # a file's content, or a symlink's target
    source: Path | None = None  # a file whose content is read when the archive is written
    device: tuple[int, int] = (0, 0)  # (major, minor) of a character device

    def content(self) -> bytes:
        return self.source.read_bytes() if self.source is not None else self.data


def normalise(path: str) -> str:
    """``/etc//hosts`` -> ``etc/hosts``; refuses ``..`` and the root itself."""
    parts = [p for p in PurePosixPath(path).parts if p not in ("/", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"not a path inside the tree: {path!r}")
    return "/".join(parts)


class Tree:
    """Entries keyed by path; adding an entry creates its parent directories (mode 0755)."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def __contains__(self, path: str) -> bool:
        return normalise(path) in self._entries

    def __getitem__(self, path: str) -> Entry:
        return self._entries[normalise(path)]

    def __len__(self) -> int:
        return len(self._entries)

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        self._add(Entry(normalise(path), Kind.dir, mode))

    def add_file(
        self, path: str, data: bytes | str = b"", *, source: Path | None = None, mode: int = 0o644
    ) -> None:
        content = data.encode() if isinstance(data, str) else data
        self._add(Entry(normalise(path), Kind.file, mode, content, source))

    def symlink(self, path: str, target: str) -> None:
        self._add(Entry(normalise(path), Kind.symlink, 0o777, target.encode()))

    def chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._add(Entry(normalise(path), Kind.chardev, mode, device=(major, minor)))

    def entries(self) -> list[Entry]:
        """Every entry, each directory before what it contains."""
        return [self._entries[p] for p in sorted(self._entries)]

    def _add(self, entry: Entry) -> None:
        parent = PurePosixPath(entry.path).parent
        missing = [str(p) for p in (parent, *parent.parents) if str(p) != "."]
        for directory in reversed(missing):
            existing = self._entries.get(directory)
            if existing is None:
                self._entries[directory] = Entry(directory, Kind.dir, 0o755)
            elif existing.kind is not Kind.dir:
                raise ValueError(f"{directory} is a {existing.kind}, not a directory")
        old = self._entries.get(entry.path)
        if old is not None and Kind.dir in (old.kind, entry.kind) and old.kind is not entry.kind:
            raise ValueError(f"{entry.path} is already a {old.kind}")
        self._entries[entry.path] = entry
