"""Operator probes, controller side (OpenNebula's ``im/<kind>.d`` and ``onehost sync``).

The operator puts executables in ``STATE_DIR/probes/common/`` (every host) and
``STATE_DIR/probes/<kind>/`` (hosts whose driver is that kind). :meth:`ProbeService.sync`
checks them, packs them into one deterministic tar (sorted, mtime 0, owner 0, mode 0755) and
stores it with its SHA-256, the *probes version*, in the ``settings`` table: every controller
sharing the database then serves the same bundle, whatever its own disk holds. Agents learn the
version from each heartbeat answer and fetch their kind's bundle (common + kind) when theirs
differs.

The heartbeat's report is checked here too (:func:`check_report`): names UPPER_SNAKE, values
finite numbers, strings only for the built-in attributes. The rules shared with the agent
(names, groups, sizes) are repeated in :mod:`nubes.agent.probes`, which may not import this
module; a unit test keeps them equal.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.domain.errors import InvalidInput
from nubes.domain.probes import (
    COMMON,
    KINDS,
    MAX_BUNDLE_BYTES,
    MAX_PROBE_BYTES,
    MAX_PROBES,
    METRIC_NAME,
    PROBE_NAME,
    STRING_METRICS,
)
from nubes.identity import policy
from nubes.store import events
from nubes.store.db import Database
from nubes.store.models import Host, Setting

GROUPS = (COMMON, *KINDS)
MAX_METRICS = 2048
MAX_PROBE_ERRORS = MAX_PROBES + 8
MAX_ERROR_TEXT = 1000
VERSION_KEY = "probes.version"
BUNDLE_KEY = "probes.bundle"
#: how long a controller trusts its copy of the version (another may have synced)
VERSION_TTL = 5.0
_RUNNABLE = (b"#!", b"\x7fELF")


@dataclass(frozen=True)
class Synced:
    version: str
    probes: list[str]
    changed: bool


@dataclass(frozen=True)
class HostMetrics:
    name: str
    metrics: dict[str, Any]
    probe_errors: dict[str, Any]


def _refuse(message: str) -> InvalidInput:
    return InvalidInput(f"probes not synced: {message}", code="nubes.probe.invalid")


def _scan_group(group: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for path in sorted(group.iterdir()):
        name = f"{group.name}/{path.name}"
        if not PROBE_NAME.match(path.name):
            raise _refuse(
                f"{name[:100]!r}: a probe name is letters, digits, '.', '_' and '-', starting "
                "with a letter or digit, at most 64 (no hidden or backup files here)"
            )
        if path.is_symlink() or not path.is_file():
            raise _refuse(f"{name}: not a regular file (links and directories are refused)")
        info = path.stat()
        if not info.st_mode & 0o100:
            raise _refuse(f"{name}: not executable (chmod +x it, or move it out of probes/)")
        if info.st_size > MAX_PROBE_BYTES:
            raise _refuse(f"{name}: larger than {MAX_PROBE_BYTES} bytes")
        content = path.read_bytes()
        if not content.startswith(_RUNNABLE):
            raise _refuse(f"{name}: neither a script (#!) nor an ELF program")
        files[name] = content
    return files


def scan(root: Path) -> dict[str, bytes]:
    """Every probe under ``root`` (``group/name`` → content), or a refusal naming the first
    file that is not a safe probe. A missing ``root`` is no probes."""
    if not root.exists() and not root.is_symlink():
        return {}
    if root.is_symlink() or not root.is_dir():
        raise _refuse(f"{root} is not a directory")
    files: dict[str, bytes] = {}
    for entry in sorted(root.iterdir()):
        if entry.name not in GROUPS:
            raise _refuse(
                f"{entry}: probes go in a directory named {', '.join(GROUPS)} (common: every "
                "host; the others: hosts with that driver)"
            )
        if entry.is_symlink() or not entry.is_dir():
            raise _refuse(f"{entry}: not a directory")
        files.update(_scan_group(entry))
    if len(files) > MAX_PROBES:
        raise _refuse(f"{len(files)} probes; at most {MAX_PROBES}")
    return files


def pack(files: Mapping[str, bytes]) -> bytes:
    """A tar of ``files`` that depends on nothing but their names and contents."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o755, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def unpack(data: bytes) -> dict[str, bytes]:
    """The files of a bundle this module packed (read back from the database)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        out = {}
        for member in tar:
            handle = tar.extractfile(member) if member.isreg() else None
            if handle is not None:
                out[member.name] = handle.read()
        return out


def bundle_for(files: Mapping[str, bytes], kind: str) -> bytes:
    """What a host of ``kind`` runs: the common probes and its kind's."""
    return pack({k: v for k, v in files.items() if k.partition("/")[0] in (COMMON, kind)})


def _check_value(name: str, value: Any) -> None:
    where = f"metrics.{name[:70]}"
    if not METRIC_NAME.match(name):
        raise InvalidInput(f"{where}: a metric name is A-Z, 0-9 and _, starting with a letter")
    if name in STRING_METRICS:
        if not isinstance(value, str) or len(value) > 64 or not value.isprintable():
            raise InvalidInput(f"{where}: a short printable string")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{where}: must be a number")
    elif not math.isfinite(value):
        raise InvalidInput(f"{where}: must be a finite number")


def check_report(metrics: Mapping[str, Any], probe_errors: Mapping[str, Any]) -> None:
    """Refuse a heartbeat whose metrics or probe errors the scheduler could not use."""
    if len(metrics) > MAX_METRICS:
        raise InvalidInput(f"metrics: at most {MAX_METRICS}")
    for name, value in metrics.items():
        _check_value(name, value)
    if len(probe_errors) > MAX_PROBE_ERRORS:
        raise InvalidInput(f"probe_errors: at most {MAX_PROBE_ERRORS}")
    for probe, message in probe_errors.items():
        if len(probe) > 128 or not isinstance(message, str) or len(message) > MAX_ERROR_TEXT:
            raise InvalidInput(
                f"probe_errors.{probe[:70]}: a probe name (≤ 128) and a message "
                f"(≤ {MAX_ERROR_TEXT} characters)"
            )


def _put(session: Session, key: str, value: str) -> None:
    row = session.get(Setting, key)
    if row is None:
        session.add(Setting(key=key, value=value))
    else:
        row.value = value


class ProbeService:
    """Sync the operator's probes, tell agents the version, serve their bundles."""

    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.root = root
        self._version: tuple[float, str] | None = None
        self._bundles: dict[tuple[str, str], bytes] = {}

    def sync(self, ctx: RequestContext) -> Synced:
        policy.enforce(ctx, "hosts:probes:sync")
        files = scan(self.root)
        full = pack(files)
        if len(full) > MAX_BUNDLE_BYTES:
            raise _refuse(f"the probes add up to more than {MAX_BUNDLE_BYTES} bytes")
        version = hashlib.sha256(full).hexdigest()
        names = sorted(files)
        for attempt in (1, 2):
            try:
                with self.db.transaction() as session:
                    previous = session.get(Setting, VERSION_KEY)
                    changed = previous is None or previous.value != version
                    _put(session, VERSION_KEY, version)
                    _put(session, BUNDLE_KEY, base64.b64encode(full).decode())
                    events.record(
                        session,
                        ctx,
                        "host.probes_synced",
                        "probes",
                        version[:64],
                        payload={"probes": names, "changed": changed},
                    )
                break
            except IntegrityError:
                # two first-ever syncs both inserted the settings rows (PostgreSQL): the
                # loser's second try updates them
                if attempt == 2:
                    raise
        self._version = (time.monotonic(), version)
        return Synced(version, names, changed)

    def fresh_version(self) -> str | None:
        """The version if it was read within VERSION_TTL seconds, else None (no I/O)."""
        cached = self._version
        if cached is not None and time.monotonic() - cached[0] < VERSION_TTL:
            return cached[1]
        return None

    def version(self) -> str:
        """The version agents should have ("" before the first sync). Read at most every
        VERSION_TTL seconds: a thousand hosts heartbeat, and a sync is rare."""
        fresh = self.fresh_version()
        if fresh is not None:
            return fresh
        with self.db.read() as session:
            row = session.get(Setting, VERSION_KEY)
        version = row.value if row is not None else ""
        self._version = (time.monotonic(), version)
        return version

    def bundle(self, kind: str) -> tuple[str, bytes]:
        """The current version and the bundle for hosts of ``kind``."""
        with self.db.read() as session:
            version_row = session.get(Setting, VERSION_KEY)
            bundle_row = session.get(Setting, BUNDLE_KEY)
        if version_row is None or bundle_row is None:
            return "", pack({})
        key = (version_row.value, kind)
        if key not in self._bundles:
            files = unpack(base64.b64decode(bundle_row.value))
            self._bundles = {key: bundle_for(files, kind), **dict(list(self._bundles.items())[:7])}
        return version_row.value, self._bundles[key]

    def monitored(self) -> list[HostMetrics]:
        """The last metrics and probe errors of every monitored host (for /metrics): read at
        scrape time, so any controller sharing the database answers the same."""
        stmt = (
            select(Host.name, Host.metrics, Host.probe_errors)
            .where(Host.state == "monitored")
            .order_by(Host.name)
        )
        with self.db.read() as session:
            return [
                HostMetrics(name, dict(metrics or {}), dict(errors or {}))
                for name, metrics, errors in session.execute(stmt)
            ]
