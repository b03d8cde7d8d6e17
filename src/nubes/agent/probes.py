"""Operator probes on a compute node: install the bundle the controller syncs, run every probe
each monitoring cycle, and turn their ``NAME=VALUE`` output into metrics and probe errors.

A probe is any executable in ``AGENT_STATE/probes/<group>/`` (group: ``common`` or this host's
driver kind). Each cycle runs them all at once, each in its own session (process group) with
its group's directory as cwd, a minimal environment and a time limit; a probe that overruns
it, or prints more than ``MAX_OUTPUT`` bytes, is killed with everything in its process group,
and whatever a finished probe leaves running in its group is killed too.

What a run yields (docs/probes.md): metrics only from a probe that exited 0 in time and within
the output limit; within such a run good lines are kept and bad lines are reported. Every
problem lands in ``probe_errors`` under the probe's name (``fake/my_rvms.sh``), so bad output
never stops monitoring.

Probes are the one place the agent starts programs it did not choose, so they are not run
through :func:`nubes.subp.subp`: it cannot cap output or kill a process group, and both are
needed here. The bundle is a tar read member by member, never extracted with ``extractall``.
The rules shared with the controller (names, groups, sizes) are repeated in
:mod:`nubes.hosts.probes` (the agent may not import it); a unit test keeps them equal.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from nubes.agent.client import ControllerError
from nubes.domain.probes import (
    COMMON,
    MAX_BUNDLE_BYTES,
    MAX_PROBE_BYTES,
    MAX_PROBES,
    METRIC_NAME,
    PROBE_NAME,
)

#: stdout kept from one run; more and the probe is killed
MAX_OUTPUT = 64 * 1024
MAX_METRICS_PER_PROBE = 256
#: a run's error message (several bad lines are joined) is cut to this length
MAX_ERROR = 500
STDERR_TAIL = 2048
DEFAULT_TIMEOUT = 5.0
DIRECTORY = "probes"
VERSION_FILE = "VERSION"
#: the key under which a failed bundle install is reported (never a probe name: no slash)
BUNDLE_ERROR = "bundle"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d{1,18}$")


class BundleError(Exception):
    """The bundle from the controller is unusable (not a tar, a link, a path outside)."""


# parsing ------------------------------------------------------------------------------------


@dataclass
class Parsed:
    metrics: dict[str, float | int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _number(text: str) -> float | int | None:
    if _INTEGER.match(text):
        return int(text)
    if not _NUMBER.match(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _parse_line(number: int, line: str, parsed: Parsed) -> None:
    name, sep, raw = line.partition("=")
    name, value_text = name.strip(), raw.strip()
    if len(value_text) >= 2 and value_text[0] == value_text[-1] == '"':
        value_text = value_text[1:-1]
    shown = line if len(line) <= 80 else line[:77] + "..."
    if not sep:
        parsed.problems.append(f"line {number}: {shown!r} is not NAME=VALUE")
    elif not METRIC_NAME.match(name):
        parsed.problems.append(
            f"line {number}: {name[:70]!r} is not a metric name (A-Z, 0-9 and _, "
            "starting with a letter, at most 64)"
        )
    elif (value := _number(value_text)) is None:
        finite = "finite " if value_text.lower().lstrip("+-") in ("inf", "infinity", "nan") else ""
        parsed.problems.append(f"line {number}: {shown!r} is not a {finite}number")
    elif name in parsed.metrics:
        parsed.problems.append(f"line {number}: {name} given twice; the first value is kept")
    elif len(parsed.metrics) >= MAX_METRICS_PER_PROBE:
        parsed.problems.append(f"line {number}: more than {MAX_METRICS_PER_PROBE} metrics")
    else:
        parsed.metrics[name] = value


def parse_output(text: str) -> Parsed:
    """``NAME=VALUE`` lines; blank lines and ``#`` comments are skipped, every other line that
    is not a metric is a problem (reported, never fatal)."""
    parsed = Parsed()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            _parse_line(number, line, parsed)
    return parsed


def summarise(problems: list[str]) -> str:
    """Many problems in one message of bounded length: the first ones, then a count."""
    text = "; ".join(problems)
    if len(text) <= MAX_ERROR:
        return text
    return text[: MAX_ERROR - 30].rstrip() + f"... ({len(problems)} problems)"


# running ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeRun:
    """One probe's run: ``failure`` says why its output is not used (None: it is)."""

    returncode: int | None
    stdout: str
    stderr: str
    failure: str | None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left in it
        os.killpg(pgid, signal.SIGKILL)


def _exited(pid: int, deadline: float) -> bool:
    """Wait until ``pid`` has exited, without reaping it: while it is an unreaped zombie its
    PID (and so its process group id) cannot be reused, so killing the group stays safe."""
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _collect(
    proc: subprocess.Popen[bytes], out: bytearray, err: bytearray, deadline: float, timeout: float
) -> str | None:
    """Read both pipes to their end, keeping at most MAX_OUTPUT of stdout and the tail of
    stderr; why the run failed (timed out, too much output), or None."""
    assert proc.stdout is not None
    assert proc.stderr is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return f"timed out after {timeout:g} s"
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if len(out) > MAX_OUTPUT:
                    return f"printed more than {MAX_OUTPUT} bytes; killed"
                del err[:-STDERR_TAIL]
    if not _exited(proc.pid, deadline):
        return f"timed out after {timeout:g} s"
    return None


def run_probe(path: Path, *, timeout: float, env: Mapping[str, str]) -> ProbeRun:
    """Run one probe to its end or its deadline; its whole process group is gone afterwards
    (unless a process in it made a session of its own)."""
    try:
        proc = subprocess.Popen(
            [str(path)],
            cwd=path.parent,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return ProbeRun(None, "", "", f"cannot run: {exc.strerror or exc}")
    out, err = bytearray(), bytearray()
    try:
        failure = _collect(proc, out, err, time.monotonic() + timeout, timeout)
    finally:
        _kill_group(proc.pid)  # the leader is alive or an unreaped zombie: no PID reuse
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    stdout = bytes(out[:MAX_OUTPUT]).decode(errors="replace")
    stderr = bytes(err[-STDERR_TAIL:]).decode(errors="replace")
    if failure is None and proc.returncode != 0:
        failure = _exit_failure(proc.returncode, stderr)
    return ProbeRun(proc.returncode, stdout, stderr, failure)


def _exit_failure(code: int, stderr: str) -> str:
    tail = " | ".join(line.strip() for line in stderr.strip().splitlines()[-3:] if line.strip())
    tail = tail[-200:]
    if code < 0:
        try:
            why = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            why = f"killed by signal {-code}"
    else:
        why = f"exited {code}"
    return f"{why}: {tail}" if tail else why


def outcome(run: ProbeRun) -> tuple[dict[str, float | int], str | None]:
    """A run's metrics and its error message (None when all was well)."""
    if run.failure is not None:
        return {}, run.failure
    parsed = parse_output(run.stdout)
    if not parsed.metrics and not parsed.problems:
        return {}, "printed no metrics"
    return parsed.metrics, summarise(parsed.problems) if parsed.problems else None


# the installed set ----------------------------------------------------------------------------


class BundleSource(Protocol):
    def download_probes(self) -> tuple[str, bytes]: ...


def unpack(data: bytes, kind: str) -> dict[str, bytes]:
    """The bundle's files (``group/name`` → content), every member checked: a regular file
    directly under ``common/`` or ``<kind>/`` with a safe name; anything else refuses it all."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                group, _, name = member.name.partition("/")
                if not member.isreg():
                    raise BundleError(f"{member.name[:100]!r} is not a regular file")
                if group not in (COMMON, kind) or not PROBE_NAME.match(name):
                    raise BundleError(f"{member.name[:100]!r} is not <common|{kind}>/<name>")
                if member.size > MAX_PROBE_BYTES or len(files) >= MAX_PROBES:
                    raise BundleError(f"{member.name!r}: too large, or too many probes")
                if member.name in files:
                    raise BundleError(f"{member.name!r} is in the bundle twice")
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file always has content
                files[member.name] = handle.read()
    except tarfile.TarError as exc:
        raise BundleError(f"the bundle is not a tar archive: {exc}") from exc
    return files


class InstalledProbes:
    """The probes in ``AGENT_STATE/probes``, their version, and running them."""

    def __init__(
        self,
        state_dir: Path,
        kind: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.kind = kind
        self.timeout = timeout
        self.root = state_dir / DIRECTORY
        self.env = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/", **(env or {})}
        self.install_error: str | None = None
        self.version = self._installed_version()

    def _installed_version(self) -> str:
        try:
            stamp = json.loads((self.root / VERSION_FILE).read_text())
        except (OSError, ValueError):
            return ""
        if not isinstance(stamp, dict) or stamp.get("kind") != self.kind:
            return ""  # installed for another driver: fetch this one's
        return str(stamp.get("version", ""))

    def install(self, version: str, data: bytes) -> None:
        """Replace the installed probes with the bundle's, all at once: a fresh directory is
        filled, then renamed into place (a probe is never seen half-written)."""
        files = unpack(data, self.kind)
        for stale in self.state_dir.glob(".probes-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by an install that died midway
        fresh = self.state_dir / f".probes-new-{secrets.token_hex(4)}"
        old = self.state_dir / f".probes-old-{secrets.token_hex(4)}"
        fresh.mkdir(mode=0o700)
        try:
            for relative, content in sorted(files.items()):
                target = fresh / relative
                target.parent.mkdir(mode=0o700, exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                with os.fdopen(os.open(target, flags, 0o700), "wb") as handle:
                    handle.write(content)
            stamp = {"version": version, "kind": self.kind, "probes": sorted(files)}
            (fresh / VERSION_FILE).write_text(json.dumps(stamp))
            if self.root.exists() or self.root.is_symlink():
                os.rename(self.root, old)
            os.rename(fresh, self.root)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        self.version = version

    def update(self, source: BundleSource, wanted: str) -> bool:
        """Fetch and install the controller's bundle; whether ``wanted`` is now installed."""
        try:
            version, data = source.download_probes()
            self.install(version, data)
            self.install_error = None
        except (BundleError, ControllerError, OSError) as exc:
            self.install_error = f"cannot install probes {wanted[:12]}: {exc}"[:MAX_ERROR]
            return False
        return self.version == wanted

    def probes(self) -> dict[str, Path]:
        """``group/name`` → path of every runnable probe (regular, executable, not a link)."""
        found: dict[str, Path] = {}
        for group in (COMMON, self.kind):
            directory = self.root / group
            if directory.is_symlink() or not directory.is_dir():
                continue
            for path in sorted(directory.iterdir()):
                if (
                    PROBE_NAME.match(path.name)
                    and not path.is_symlink()
                    and path.is_file()
                    and os.access(path, os.X_OK)
                ):
                    found[f"{group}/{path.name}"] = path
        return dict(list(found.items())[:MAX_PROBES])

    def run(self, reserved: Collection[str] = ()) -> tuple[dict[str, float | int], dict[str, str]]:
        """Run every probe at once; their metrics (first probe by name wins a clash, built-in
        ``reserved`` names always win) and the errors by probe name."""
        probes = self.probes()
        errors: dict[str, str] = {}
        if self.install_error:
            errors[BUNDLE_ERROR] = self.install_error
        if not probes:
            return {}, errors
        with ThreadPoolExecutor(max_workers=min(len(probes), 16)) as pool:
            runs = dict(
                zip(
                    probes,
                    pool.map(
                        lambda p: run_probe(p, timeout=self.timeout, env=self.env),
                        probes.values(),
                    ),
                    strict=True,
                )
            )
        return merge(runs, reserved, errors)


def merge(
    runs: Mapping[str, ProbeRun], reserved: Collection[str], errors: dict[str, str]
) -> tuple[dict[str, float | int], dict[str, str]]:
    metrics: dict[str, float | int] = {}
    given_by: dict[str, str] = {}
    for name, run in sorted(runs.items()):
        values, error = outcome(run)
        problems = [error] if error else []
        for metric, value in values.items():
            if metric in reserved:
                problems.append(f"{metric} is a built-in metric; ignored")
            elif metric in given_by:
                problems.append(f"{metric} is also given by {given_by[metric]}; ignored")
            else:
                metrics[metric], given_by[metric] = value, name
        if problems:
            errors[name] = summarise(problems)
    return metrics, errors
