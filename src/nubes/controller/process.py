"""Start the controller detached, find it, stop it.

A detached controller is ``python -m nubes.controller.run --state-dir DIR``, started in its
own session with output to ``DIR/logs/controller.log``; ``DIR/controller.pid`` holds its PID
and, on a second line, the URL it answers on.
``start`` returns only once /healthz answers (or says why it did not).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from nubes.config import Settings

PID_FILE = "controller.pid"
LOG_FILE = "logs/controller.log"


class ControllerError(Exception):
    """Starting or stopping the controller failed; the message says why and what to do."""


@dataclass(frozen=True)
class Running:
    pid: int
    url: str
    healthy: bool


def pid_file(state_dir: Path) -> Path:
    return state_dir / PID_FILE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _is_ours(pid: int, module: str = "nubes.controller.run") -> bool:
    """The PID in the file still belongs to our process (not a recycled PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid)
    return any(module.encode() in part for part in cmdline)


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def find(settings: Settings) -> Running | None:
    path = pid_file(settings.state_dir)
    try:
        first, _, rest = path.read_text().partition("\n")
        pid = int(first.strip())
    except (OSError, ValueError):
        return None
    if not (_alive(pid) and _is_ours(pid)):
        return None
    url = rest.strip() or settings.effective_public_url
    return Running(pid, url, healthy(url))


def start_detached(settings: Settings, *, timeout: float = 60.0) -> Running:
    if (running := find(settings)) is not None:
        return running
    log_path = settings.state_dir / LOG_FILE
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "nubes.controller.run",
        "--state-dir",
        str(settings.state_dir),
        "--port",
        str(settings.port),
        "--host",
        settings.listen_host,
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = settings.effective_public_url
    pid_file(settings.state_dir).write_text(f"{proc.pid}\n{url}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_file(settings.state_dir).unlink(missing_ok=True)
            raise ControllerError(
                f"the controller exited with code {proc.returncode}; last lines of "
                f"{log_path}:\n{_tail(log_path)}"
            )
        if healthy(url, timeout=1.0):
            return Running(proc.pid, url, True)
        time.sleep(0.1)
    raise ControllerError(
        f"the controller (pid {proc.pid}) did not answer on {url} within {timeout:.0f} s; "
        f"see {log_path}"
    )


def stop(settings: Settings, *, timeout: float = 15.0) -> int | None:
    """Stop the detached controller; returns its PID, or None if none was running."""
    running = find(settings)
    path = pid_file(settings.state_dir)
    if running is None:
        path.unlink(missing_ok=True)
        return None
    os.kill(running.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(running.pid):
        time.sleep(0.1)
    if _alive(running.pid):
        os.kill(running.pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return running.pid


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# the local agent (nubes up runs one on the head node) -----------------------------------------

AGENT_PID_FILE = "agent.pid"
AGENT_LOG_FILE = "logs/agent.log"
AGENT_MODULE = "nubes.agent.run"


def agent_dir(state_dir: Path) -> Path:
    return state_dir / "agent"


def find_agent(settings: Settings) -> int | None:
    try:
        pid = int((settings.state_dir / AGENT_PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and _is_ours(pid, AGENT_MODULE) else None


def start_agent_detached(
    settings: Settings,
    *,
    url: str,
    token: str | None,
    driver: str = "auto",
    timeout: float = 30.0,
) -> int:
    """Start the head node's own agent; returns once it has joined (agent.json written)."""
    if (pid := find_agent(settings)) is not None:
        return pid
    state = agent_dir(settings.state_dir)
    identity = state / "agent.json"
    argv = [
        sys.executable,
        "-m",
        AGENT_MODULE,
        "--state-dir",
        str(state),
        "--url",
        url,
        "--driver",
        driver,
    ]
    if token:
        argv += ["--token", token]
    log_path = settings.state_dir / AGENT_LOG_FILE
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    (settings.state_dir / AGENT_PID_FILE).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (settings.state_dir / AGENT_PID_FILE).unlink(missing_ok=True)
            raise ControllerError(
                f"the agent exited with code {proc.returncode}; last lines of {log_path}:\n"
                f"{_tail(log_path)}"
            )
        if identity.exists() and identity.stat().st_mtime >= proc_start(proc.pid):
            return proc.pid
        time.sleep(0.1)
    raise ControllerError(f"the agent (pid {proc.pid}) did not join within {timeout:.0f} s")


def proc_start(pid: int) -> float:
    try:
        return Path(f"/proc/{pid}").stat().st_mtime - 1.0
    except OSError:
        return 0.0


def stop_agent(settings: Settings, *, timeout: float = 40.0) -> int | None:
    """Stop the local agent (its instances keep running; a restarted agent adopts them)."""
    pid = find_agent(settings)
    path = settings.state_dir / AGENT_PID_FILE
    if pid is None:
        path.unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return pid
