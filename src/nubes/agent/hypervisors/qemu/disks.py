"""An instance's disk: a qcow2 overlay whose backing file is the cached base image, made with
``qemu-img``. The base is shared by every instance of that image and never written; the
overlay holds only what the guest changes. This module never deletes anything but the
temporary file of a failed creation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nubes.agent.hypervisors.base import HypervisorError
from nubes.subp import SubpError, subp

GIB = 1024**3
BASE_FORMATS = frozenset({"qcow2", "raw"})


def virtual_size(image: Path, fmt: str, *, qemu_img: str = "qemu-img") -> int:
    """The size in bytes the guest sees. ``-U``: the base may be open in running guests."""
    try:
        result = subp([qemu_img, "info", "-U", "--output=json", "-f", fmt, image], timeout=60)
        return int(json.loads(result.stdout)["virtual-size"])
    except SubpError as exc:
        raise HypervisorError(f"cannot read image {image}: {exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise HypervisorError(f"qemu-img info {image}: unexpected output ({exc})") from exc


def create_overlay(
    overlay: Path, base: Path, base_format: str, size_gb: int, *, qemu_img: str = "qemu-img"
) -> int:
    """Make ``overlay`` on top of ``base``, ``size_gb`` GiB large, or as large as the base when
    that is larger (a disk never shrinks below its image). Atomic: the overlay appears whole or
    not at all. Returns the virtual size in bytes."""
    if base_format not in BASE_FORMATS:
        raise HypervisorError(
            f"qemu cannot boot a {base_format!r} image (only {sorted(BASE_FORMATS)})",
            retryable=False,
        )
    if not base.is_file():
        raise HypervisorError(f"the base image {base} is not there (yet)")
    base = base.resolve()  # the overlay records this path; it must not depend on a cwd
    size = max(size_gb * GIB, virtual_size(base, base_format, qemu_img=qemu_img))
    partial = overlay.with_name(overlay.name + ".partial")
    try:
        subp(
            [qemu_img, "create", "-q", "-f", "qcow2", "-F", base_format, "-b", base,
             partial, str(size)],
            timeout=60,
        )  # fmt: skip
        os.replace(partial, overlay)
    except SubpError as exc:
        raise HypervisorError(f"cannot create the disk {overlay}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return size
