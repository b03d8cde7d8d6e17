"""The lxc-* tools for one lxcpath, through :func:`nubes.subp.subp`.

Failures become :class:`HypervisorError` carrying the command's output and the tail of the
container's own LXC log (``lxc.log``), where LXC says why a start failed.
"""

from __future__ import annotations

import math
from pathlib import Path

from nubes.agent.hypervisors.base import HypervisorError
from nubes.subp import SubpError, SubpResult, subp

# lxc-info -s states (LXC's lxc_state_t).
RUNNING = "RUNNING"
STOPPED = "STOPPED"
FROZEN = "FROZEN"
STARTING = "STARTING"
STOPPING = "STOPPING"
ABORTING = "ABORTING"
FREEZING = "FREEZING"
THAWED = "THAWED"

LXC_NOT_RUNNING = 2  # lxc-stop's exit code for "exists but was not running"
_LOG_TAIL_LINES = 8
_QUICK = 30.0  # seconds for commands that only talk to the container's monitor socket


def log_tail(log: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


class Lxc:
    def __init__(self, lxcpath: Path) -> None:
        self.lxcpath = lxcpath

    def _run(
        self,
        tool: str,
        name: str,
        *args: str,
        timeout: float = _QUICK,
        ok_codes: tuple[int, ...] = (0,),
    ) -> SubpResult:
        argv = [tool, "--name", name, "--lxcpath", str(self.lxcpath), *args]
        try:
            return subp(argv, timeout=timeout, ok_codes=ok_codes)
        except SubpError as exc:
            tail = log_tail(self.lxcpath / name / "lxc.log")
            detail = f"; lxc.log: {tail}" if tail else ""
            raise HypervisorError(f"{name}: {exc}{detail}") from exc

    def state(self, name: str) -> str | None:
        """LXC's state of the container, or None when LXC does not know it."""
        argv = ["lxc-info", "--name", name, "--lxcpath", str(self.lxcpath), "--state", "-H"]
        result = subp(argv, timeout=_QUICK, check=False)
        if result.returncode != 0:
            return None
        return result.stdout.strip() or None

    def start(self, name: str, timeout: float) -> None:
        self._run("lxc-start", name, "--daemon", timeout=timeout)

    def wait(self, name: str, state: str, timeout: float) -> None:
        seconds = str(max(1, math.ceil(timeout)))
        self._run("lxc-wait", name, "--state", state, "--timeout", seconds, timeout=timeout + 10)

    def shutdown(self, name: str, timeout: float) -> None:
        """Halt signal, then SIGKILL to every task after ``timeout`` seconds."""
        seconds = str(max(1, math.ceil(timeout)))
        self._run(
            "lxc-stop",
            name,
            "--timeout",
            seconds,
            timeout=timeout + _QUICK,
            ok_codes=(0, LXC_NOT_RUNNING),
        )

    def kill(self, name: str) -> None:
        self._run("lxc-stop", name, "--kill", ok_codes=(0, LXC_NOT_RUNNING))

    def reboot(self, name: str, timeout: float) -> bool:
        """Reboot signal; True when the container is running again within ``timeout``."""
        seconds = str(max(1, math.ceil(timeout)))
        argv = ["lxc-stop", "--name", name, "--lxcpath", str(self.lxcpath), "--reboot"]
        try:
            result = subp([*argv, "--timeout", seconds], timeout=timeout + _QUICK, check=False)
        except SubpError:  # timed out or vanished: the caller checks the state and recovers
            return False
        return result.returncode == 0

    def freeze(self, name: str) -> None:
        self._run("lxc-freeze", name)

    def unfreeze(self, name: str) -> None:
        self._run("lxc-unfreeze", name)
