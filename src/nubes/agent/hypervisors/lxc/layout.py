"""Where every LXC artefact of nubes lives on the host, derived from ids alone.

::

    <state_dir>/
      images/<image key>/rootfs/          extracted once, the read-only lower layer
      images/<image key>/.lock            flock held while extracting
      containers/                         the lxcpath (``lxc-* -P``)
        <container name>/                 the instance dir, LXC's container dir
          config                          rendered by config.py, rewritten on every start
          instance-id                     the nubes id (the name may be shortened)
          desired                         "running" or "stopped": what we last asked for
          upper/ work/                    overlayfs upper and work dirs (work is LXC's)
          console.log console.log.1       guest console, rotated by LXC at 1 MiB
          lxc.log                         LXC's own warnings and errors
          config-drive/ config-drive.sha256  the config drive's files (bind-mounted read-only)

Pure: no I/O. A restarted agent recomputes the same paths and names from the same ids.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

NAME_PREFIX = "nubes-"
# LXC itself only needs the name to be a valid directory name that still fits in
# "lxc.payload.<name>" (NAME_MAX); 64 keeps cgroup paths, lock files under /run/lxc and ps
# titles readable, and matches nubes' resource-name limit.
NAME_MAX = 64
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DIGEST_CHARS = 16


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:_DIGEST_CHARS]


def safe_key(value: str, max_len: int) -> str:
    """``value`` itself when it is a short, filesystem-safe token; otherwise a deterministic
    shortened form: a safe prefix of it, a dash and a hash of the whole value."""
    if _SAFE_ID.match(value) and len(value) <= max_len:
        return value
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", value).lstrip("._-")
    head = cleaned[: max_len - _DIGEST_CHARS - 1]
    return f"{head}-{_digest(value)}" if head else _digest(value)


def container_name(instance_id: str) -> str:
    """``nubes-<id>``, shortened deterministically when the id is long or unsafe."""
    return NAME_PREFIX + safe_key(instance_id, NAME_MAX - len(NAME_PREFIX))


def image_key(image_id: str) -> str:
    return safe_key(image_id, 128)


@dataclass(frozen=True)
class InstancePaths:
    lxcpath: Path
    name: str

    @property
    def dir(self) -> Path:
        return self.lxcpath / self.name

    @property
    def config(self) -> Path:
        return self.dir / "config"

    @property
    def id_file(self) -> Path:
        return self.dir / "instance-id"

    @property
    def desired(self) -> Path:
        return self.dir / "desired"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def console_log_rotated(self) -> Path:
        return self.dir / "console.log.1"

    @property
    def lxc_log(self) -> Path:
        return self.dir / "lxc.log"

    @property
    def config_drive(self) -> Path:
        return self.dir / "config-drive"


@dataclass(frozen=True)
class Layout:
    state_dir: Path

    @property
    def images(self) -> Path:
        return self.state_dir / "images"

    @property
    def lxcpath(self) -> Path:
        return self.state_dir / "containers"

    def image_dir(self, image_id: str) -> Path:
        return self.images / image_key(image_id)

    def instance(self, instance_id: str) -> InstancePaths:
        return InstancePaths(self.lxcpath, container_name(instance_id))
