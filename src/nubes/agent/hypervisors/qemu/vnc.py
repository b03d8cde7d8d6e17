"""VNC display numbers: one per instance, bound to loopback only, kept by the instance from one
start to the next (its port is stable) until it is destroyed. The choice and QEMU's bind happen
under one ``flock`` on ``<state_dir>/vnc.lock``, so threads and agent processes never pick the
same display; a port something else holds is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from nubes.agent.hypervisors.base import HypervisorError
from nubes.agent.hypervisors.qemu.cmdline import VNC_HOST, InstancePaths, vnc_port


def read_display(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def port_free(port: int) -> bool:
    """Whether QEMU could bind ``port`` on loopback now (nothing is sent anywhere)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as QEMU binds it
        try:
            sock.bind((VNC_HOST, port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def allocation_lock(state_dir: Path) -> Iterator[None]:
    """Hold it from choosing a display until QEMU has bound it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "vnc.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # per open file: excludes other threads too
        yield
    finally:
        os.close(fd)


def pick_display(state_dir: Path, instance_id: str, displays: tuple[int, int]) -> int:
    """The instance's previous display when still free, else the lowest free one in
    ``displays`` = [first, stop); recorded in the instance directory. Call it holding
    :func:`allocation_lock`."""
    first, stop = displays
    paths = InstancePaths.of(state_dir, instance_id)
    taken = {
        display
        for other in paths.root.parent.glob("*/vnc-display")
        if other.parent.name != instance_id and (display := read_display(other)) is not None
    }
    previous = read_display(paths.vnc_display)
    for display in ([previous] if previous is not None else []) + list(range(first, stop)):
        if first <= display < stop and display not in taken and port_free(vnc_port(display)):
            paths.vnc_display.write_text(f"{display}\n")
            return display
    raise HypervisorError(f"no free VNC display in {first}..{stop - 1}")
