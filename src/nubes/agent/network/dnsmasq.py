"""One dnsmasq per network, inside that network's DHCP namespace: started, reloaded (SIGHUP),
adopted after an agent restart and stopped, always by PID.

A PID is trusted only when ``/proc/<pid>/cmdline`` is dnsmasq with *this* network's
configuration file (``--conf-file=<run_dir>/dhcp/<network>/dnsmasq.conf``), so a recycled PID
or another agent's dnsmasq (test hosts share a machine) is never signalled. dnsmasq drops its
privileges after start: its files are world-readable (they hold MACs, addresses and host names,
nothing secret) so a SIGHUP can re-read them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from nubes.agent.network.dhcp import DhcpFiles, DhcpPaths
from nubes.agent.network.runner import NetworkError, Run

PROC = Path("/proc")
START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
LOG_LIMIT = 4 * 1024 * 1024  # the log is emptied past this size (dnsmasq appends)


def cmdline(pid: int, proc: Path = PROC) -> list[str]:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="surrogateescape") for arg in raw.split(b"\0")[:-1]]


def is_ours(pid: int, paths: DhcpPaths, proc: Path = PROC) -> bool:
    argv = cmdline(pid, proc)
    return (
        bool(argv)
        and os.path.basename(argv[0]) == "dnsmasq"
        and f"--conf-file={paths.conf}" in argv
    )


def running_pid(paths: DhcpPaths, proc: Path = PROC) -> int | None:
    try:
        text = paths.pid.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if is_ours(pid, paths, proc) else None


def traversable(directory: Path) -> None:
    """``mkdir -p`` giving every directory it makes, and ``directory``, mode 0755 whatever
    the umask: dnsmasq reads its files as ``nobody``."""
    missing = []
    walk = directory
    while not walk.exists():
        missing.append(walk)
        walk = walk.parent
    for made in reversed(missing):
        made.mkdir(mode=0o755, exist_ok=True)
        made.chmod(0o755)
    directory.chmod(0o755)


def write_if_changed(path: Path, text: str) -> bool:
    """Atomically (a reader sees the old file or the new one, never half of it)."""
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.chmod(0o644)
    os.replace(partial, path)
    return True


Kill = Callable[[int, int], None]


class Dnsmasq:
    def __init__(
        self,
        run: Run,
        paths: DhcpPaths,
        netns: str,
        proc: Path = PROC,
        kill: Kill = os.kill,
    ) -> None:
        self.run = run
        self.paths = paths
        self.netns = netns
        self.proc = proc
        self.kill = kill

    def ensure(self, files: DhcpFiles, changes: list[str]) -> None:
        """Running with exactly ``files``: write what differs, then start, SIGHUP or
        restart, whichever is the smallest step."""
        traversable(self.paths.root)
        data_changed = write_if_changed(self.paths.hosts, files.hosts)
        data_changed |= write_if_changed(self.paths.opts, files.opts)
        conf_changed = write_if_changed(self.paths.conf, files.conf)
        self._trim_log()
        pid = running_pid(self.paths, self.proc)
        if pid is not None and conf_changed:
            self.stop(pid)
            changes.append(f"dnsmasq {self.netns}: stopped pid {pid} (configuration changed)")
            pid = None
        if pid is None:
            pid = self.start()
            changes.append(f"dnsmasq {self.netns}: started pid {pid}")
        elif data_changed:
            self.kill(pid, signal.SIGHUP)
            changes.append(f"dnsmasq {self.netns}: reloaded pid {pid}")

    def start(self) -> int:
        self.paths.pid.unlink(missing_ok=True)
        # dnsmasq daemonizes itself; its parent exits once the child is serving (or failed).
        self.run(["ip", "netns", "exec", self.netns, "dnsmasq", f"--conf-file={self.paths.conf}"])
        return wait_for_pid(
            lambda: running_pid(self.paths, self.proc),
            f"dnsmasq in {self.netns} did not write {self.paths.pid}",
        )

    def stop(self, pid: int | None = None) -> int | None:
        """SIGTERM, then SIGKILL; only ever a PID that is this network's dnsmasq."""
        pid = running_pid(self.paths, self.proc) if pid is None else pid
        if pid is None:
            return None
        stop_daemon(
            pid,
            lambda p: is_ours(p, self.paths, self.proc),
            self.kill,
            f"dnsmasq (pid {pid}) in {self.netns}",
        )
        self.paths.pid.unlink(missing_ok=True)
        return pid

    def _trim_log(self) -> None:
        trim_log(self.paths.log)


def wait_for_pid(
    read: Callable[[], int | None], failure: str, timeout: float = START_TIMEOUT
) -> int:
    """A daemon we just started detaches; wait until its PID file names it."""
    deadline = time.monotonic() + timeout
    while (pid := read()) is None:
        if time.monotonic() >= deadline:
            raise NetworkError(failure)
        time.sleep(0.05)
    return pid


def stop_daemon(pid: int, still_ours: Callable[[int], bool], kill: Kill, what: str) -> None:
    """SIGTERM, then SIGKILL, each given STOP_TIMEOUT, while ``pid`` is still the daemon we
    started (checked before every signal: a recycled PID is never signalled)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not still_ours(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        while still_ours(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    if still_ours(pid):
        raise NetworkError(f"{what} will not die")


def trim_log(path: Path) -> None:
    """Empty a daemon's log past LOG_LIMIT (the daemons append and never rotate)."""
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_LIMIT:
            os.truncate(path, 0)
