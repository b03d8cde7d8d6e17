"""Finding and ending an instance's QEMU process: from its pidfile, checked against
``/proc/<pid>/cmdline`` so that a recycled PID is never mistaken for it (or killed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from nubes.agent.hypervisors.qemu.cmdline import is_instance_process, process_name

PROC = Path("/proc")


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(text) if text.isdigit() else None


def cmdline(pid: int) -> list[str]:
    """A process's argv; empty for a zombie, a kernel thread or a process that is gone."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="surrogateescape") for arg in raw.split(b"\0")[:-1]]


def instance_pid(pidfile: Path, instance_id: str) -> int | None:
    """The PID of the instance's live QEMU, or None."""
    pid = read_pidfile(pidfile)
    if pid is None or not is_instance_process(cmdline(pid), instance_id):
        return None
    return pid


def find_instance_processes(instance_id: str) -> list[int]:
    """Every live process that is this instance's QEMU, pidfile or not (for ``destroy``)."""
    name = process_name(instance_id).encode()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if name in raw and is_instance_process(cmdline(int(entry.name)), instance_id):
            found.append(int(entry.name))
    return found


def wait_gone(pid: int, instance_id: str, timeout: float) -> bool:
    """Wait until ``pid`` is no longer the instance's QEMU; whether it went in time."""
    deadline = time.monotonic() + timeout
    while is_instance_process(cmdline(pid), instance_id):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def kill(pid: int, instance_id: str) -> None:
    """SIGKILL, only if ``pid`` is still this instance's QEMU."""
    if is_instance_process(cmdline(pid), instance_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
