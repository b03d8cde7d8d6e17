"""The image cache: each image's root file system extracted once into
``images/<image>/rootfs/``, the read-only lower layer every container of that image shares.

Atomic and single-flight: extraction happens in a temporary sibling directory that is
renamed to ``rootfs`` only when complete, under an exclusive ``flock`` on
``images/<image>/.lock``, so concurrent creates of the same image wait for one extraction
and a crash leaves only a temporary directory, removed by the next attempt. A present
``rootfs`` directory is therefore always complete. Images are immutable (Glance semantics),
so the image id is the cache key and nothing is ever re-extracted.

Never writes into a published ``rootfs``: overlayfs needs its lower layer unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from nubes.agent.hypervisors.base import HypervisorError, ImageKind
from nubes.subp import SubpError, subp

from .config import INIT_CMD
from .disk import LONG, extract_disk
from .host import unmount_under

TMP_PREFIX = "rootfs.tmp-"
_MAX_SYMLINKS = 40


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_in_root(root: Path, path: str) -> Path | None:
    """Where ``path`` leads inside ``root`` with symlinks resolved as the container would
    (absolute targets relative to ``root``); None when it does not exist."""
    parts = list(PurePosixPath(path).parts[1:])
    current = root
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops += 1
            if hops > _MAX_SYMLINKS:
                return None
            target = PurePosixPath(os.readlink(candidate))
            if target.is_absolute():
                current = root
                parts = list(target.parts[1:]) + parts
            else:
                parts = list(target.parts) + parts
            continue
        if not candidate.exists():
            return None
        current = candidate
    return current


def extract_tarball(image: Path, dest: Path) -> None:
    try:
        subp(
            [
                "tar",
                "--extract",
                f"--file={image}",
                f"--directory={dest}",
                "--numeric-owner",
                "--same-owner",
                "--same-permissions",
                "--xattrs",
                "--xattrs-include=*",
            ],
            timeout=LONG,
        )
    except SubpError as exc:
        raise HypervisorError(
            f"cannot extract rootfs image {image}: {exc}", retryable=False
        ) from exc


def _remove_leftovers(image_dir: Path) -> None:
    """Temporary directories of an interrupted extraction (a crash, a kill)."""
    for leftover in image_dir.glob(TMP_PREFIX + "*"):
        still_mounted = unmount_under(leftover)
        if still_mounted:
            raise HypervisorError(f"cannot clean {leftover}: still mounted {still_mounted}")
        shutil.rmtree(leftover)


def ensure_rootfs(image_dir: Path, image_path: Path, kind: ImageKind, fmt: str) -> Path:
    """The extracted root file system of this image, extracting it if nobody has yet."""
    rootfs = image_dir / "rootfs"
    if rootfs.is_dir():
        return rootfs
    if not image_path.is_file():
        raise HypervisorError(f"image file {image_path} does not exist", retryable=False)
    image_dir.mkdir(parents=True, exist_ok=True)
    with locked(image_dir / ".lock"):
        if rootfs.is_dir():  # another instance extracted it while we waited
            return rootfs
        _remove_leftovers(image_dir)
        work = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=image_dir))
        try:
            tree = work / "rootfs"
            tree.mkdir(mode=0o755)
            if kind is ImageKind.rootfs:
                extract_tarball(image_path, tree)
            else:
                extract_disk(image_path, fmt, tree, scratch=work)
            if resolve_in_root(tree, INIT_CMD) is None:
                raise HypervisorError(
                    f"image {image_path.name} has no {INIT_CMD}: not a system container root",
                    retryable=False,
                )
            tree.rename(rootfs)
        finally:
            _remove_leftovers(image_dir)
    return rootfs
