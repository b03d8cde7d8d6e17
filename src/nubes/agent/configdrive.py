"""Config drives on the host: the files the controller sent for an instance (path → bytes,
OpenStack layout) made into what a guest can read, an ISO 9660 image labelled ``config-2``
for VMs (cloud-init's ConfigDrive datasource looks for that label) or a plain directory tree
that a container gets bind-mounted read-only at cloud-init's seed directory.

Each artefact sits at a path the driver derives from the instance id, beside a ``.sha256``
file holding the digest of the content it was made from: it is rebuilt only when that content
changes, always into a temporary name renamed into place, so a guest (or a crash) never sees a
half-written one. Drivers remove both with the instance.

The ISO carries Rock Ridge and Joliet besides the plain 8.3 names ISO 9660 level 1 allows, so
``meta_data.json`` keeps its name on Linux (Rock Ridge) and Windows (Joliet) alike.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from nubes.agent.hypervisors.base import HypervisorError

VOLUME_ID = "config-2"
MAX_DEPTH = 6  # openstack/latest/meta_data.json is 3; ISO 9660 allows 8 levels
_SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def from_wire(encoded: Mapping[str, str] | None) -> dict[str, bytes] | None:
    """The files as the controller sends them (base64 values), or None without a drive."""
    if encoded is None:
        return None
    try:
        return {path: base64.b64decode(text, validate=True) for path, text in encoded.items()}
    except (binascii.Error, ValueError) as exc:
        raise HypervisorError(f"config drive: not base64 ({exc})", retryable=False) from exc


def check_paths(files: Mapping[str, bytes]) -> None:
    """Refuse anything but short relative paths of safe names: they become file names on the
    host and inside the guest."""
    for path in files:
        parts = path.split("/")
        if not 0 < len(parts) <= MAX_DEPTH or not all(_SAFE_PART.fullmatch(p) for p in parts):
            raise HypervisorError(f"config drive: unsafe path {path!r}", retryable=False)
    directories = {str(parent) for path in files for parent in PurePosixPath(path).parents}
    clash = directories.intersection(files)
    if clash:
        raise HypervisorError(
            f"config drive: {sorted(clash)[0]!r} is both a file and a directory", retryable=False
        )


def digest(files: Mapping[str, bytes]) -> str:
    """Of the paths and contents, independent of their order."""
    sha = hashlib.sha256()
    for path in sorted(files):
        sha.update(f"{path}\0{len(files[path])}\0".encode())
        sha.update(files[path])
    return sha.hexdigest()


def digest_file(artefact: Path) -> Path:
    return artefact.with_name(artefact.name + ".sha256")


def _up_to_date(artefact: Path, wanted: str) -> bool:
    try:
        return artefact.exists() and digest_file(artefact).read_text().strip() == wanted
    except OSError:
        return False


def _record_digest(artefact: Path, value: str) -> None:
    target = digest_file(artefact)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(value + "\n")
    os.replace(partial, target)


# -- the ISO -----------------------------------------------------------------------------------


def _iso_name(name: str, directory: bool, taken: set[str]) -> str:
    """A unique ISO 9660 level-1 name (8.3, upper case, ``[A-Z0-9_]``) within one directory;
    Rock Ridge and Joliet carry the real one."""
    stem, dot, ext = ("", "", "") if directory else name.rpartition(".")
    if directory or not dot:
        stem, ext = name, ""

    def clean(text: str, length: int) -> str:
        return re.sub(r"[^A-Z0-9_]", "_", text.upper())[:length]

    stem, ext = clean(stem, 8) or "_", clean(ext, 3)
    candidate, number = stem, 0
    while (candidate + (f".{ext}" if ext else "")) in taken:
        number += 1
        suffix = f"_{number}"
        candidate = stem[: 8 - len(suffix)] + suffix
    final = candidate + (f".{ext}" if ext else "")
    taken.add(final)
    return final


def write_iso_to(files: Mapping[str, bytes], out: BinaryIO) -> None:
    """The ISO image of ``files`` into ``out`` (a seekable binary file)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_ID)
    iso_paths: dict[str, str] = {"": ""}  # real directory path -> ISO path
    taken: dict[str, set[str]] = {}
    try:
        for path in sorted(files):
            parts = path.split("/")
            for depth, name in enumerate(parts):
                real = "/".join(parts[: depth + 1])
                parent = "/".join(parts[:depth])
                is_dir = depth < len(parts) - 1
                if is_dir and real in iso_paths:
                    continue
                iso_name = _iso_name(name, is_dir, taken.setdefault(parent, set()))
                iso_path = f"{iso_paths[parent]}/{iso_name}"
                if is_dir:
                    iso.add_directory(iso_path, rr_name=name, joliet_path=f"/{real}")
                    iso_paths[real] = iso_path
                else:
                    content = files[path]
                    iso.add_fp(
                        io.BytesIO(content),
                        len(content),
                        f"{iso_path};1",
                        rr_name=name,
                        joliet_path=f"/{real}",
                    )
        iso.write_fp(out)
    finally:
        iso.close()


def sync_iso(path: Path, files: Mapping[str, bytes] | None) -> bool:
    """Make ``path`` the ISO of ``files`` (remove it when None). True when it changed."""
    if files is None:
        return remove(path)
    check_paths(files)
    wanted = digest(files)
    if _up_to_date(path, wanted):
        return False
    partial = path.with_name(f".{path.name}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            write_iso_to(files, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except (OSError, PyCdlibException) as exc:
        partial.unlink(missing_ok=True)
        raise HypervisorError(f"cannot write the config drive {path}: {exc}") from exc
    _record_digest(path, wanted)
    return True


# -- the directory tree (containers) -----------------------------------------------------------


def sync_tree(directory: Path, files: Mapping[str, bytes] | None) -> bool:
    """Make ``directory`` hold exactly ``files`` (remove it when None). True when it changed.
    The new tree is built aside and swapped in by two renames; only call it while no guest
    has the old one mounted (the bind mount would keep showing the old tree)."""
    if files is None:
        return remove(directory)
    check_paths(files)
    wanted = digest(files)
    if directory.is_dir() and _up_to_date(directory, wanted):
        return False
    new = directory.with_name(f".{directory.name}.new")
    old = directory.with_name(f".{directory.name}.old")
    try:
        for leftover in (new, old):
            shutil.rmtree(leftover, ignore_errors=True)
        new.mkdir(mode=0o755)
        for path, content in files.items():
            target = new / path
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(0o644)
        if directory.exists():
            os.replace(directory, old)
        os.replace(new, directory)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(new, ignore_errors=True)
        raise HypervisorError(f"cannot write the config drive {directory}: {exc}") from exc
    _record_digest(directory, wanted)
    return True


def remove(artefact: Path) -> bool:
    """Remove a config drive (ISO or tree) and its digest; True when there was one."""
    existed = artefact.exists()
    try:
        if artefact.is_dir():
            shutil.rmtree(artefact)
        else:
            artefact.unlink(missing_ok=True)
        digest_file(artefact).unlink(missing_ok=True)
    except OSError as exc:
        raise HypervisorError(f"cannot remove the config drive {artefact}: {exc}") from exc
    return existed
