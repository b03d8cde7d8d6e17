"""A small synchronous QMP client over a unix socket: greeting, capability negotiation,
commands matched to their answers by id, asynchronous events set aside.

QEMU serves one QMP client at a time (a second one waits for the greeting until the first
leaves), so callers keep sessions short: connect, run a few commands, close.

Errors, all translated from socket and JSON errors at this boundary::

    QMPError
    ├── QMPConnectionError   cannot connect, or the peer closed or spoke no QMP
    ├── QMPTimeout           no answer in time
    └── QMPCommandError      QEMU answered {"error": {"class": ..., "desc": ...}}
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("nubes.agent.qmp")

MAX_MESSAGE = 16 * 1024 * 1024  # a QMP answer (query-* included) is far smaller
MAX_SUN_PATH = 107  # sockaddr_un.sun_path, less the terminating NUL


class QMPError(Exception):
    """A QMP exchange failed."""


class QMPConnectionError(QMPError):
    """No connection, or it broke, or the peer is not a QMP server."""


class QMPTimeout(QMPError):
    """QEMU did not answer in time (busy, wedged, or another client holds the monitor)."""


class QMPCommandError(QMPError):
    """QEMU refused a command."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"{command}: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


def _connect_unix(sock: socket.socket, path: Path) -> None:
    """Connect, also to a socket whose path is longer than ``sun_path`` allows: through the
    directory's file descriptor under /proc/self/fd."""
    if len(os.fsencode(path)) <= MAX_SUN_PATH:
        sock.connect(str(path))
        return
    dirfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{dirfd}/{path.name}")
    finally:
        os.close(dirfd)


class QMPClient:
    """One QMP session. Use :meth:`connect`, or wrap an already connected socket (tests)."""

    def __init__(self, sock: socket.socket, *, timeout: float = 10.0) -> None:
        self._sock = sock
        self.timeout = timeout
        self._buffer = bytearray()
        self._ids = itertools.count(1)
        self.greeting: dict[str, Any] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=256)

    @classmethod
    def connect(cls, path: Path, *, timeout: float = 10.0, wait: float = 0.0) -> QMPClient:
        """Connect and negotiate. ``wait``: keep retrying that long while the socket is not
        there yet or refuses connections (QEMU still starting)."""
        deadline = time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                _connect_unix(sock, path)
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if time.monotonic() >= deadline:
                    raise QMPConnectionError(f"cannot connect to {path}: {exc.strerror}") from exc
                time.sleep(0.05)
            except TimeoutError as exc:
                sock.close()
                raise QMPTimeout(f"connecting to {path} timed out after {timeout} s") from exc
            except OSError as exc:
                sock.close()
                raise QMPConnectionError(f"cannot connect to {path}: {exc}") from exc
        client = cls(sock, timeout=timeout)
        try:
            client.negotiate()
        except BaseException:
            client.close()
            raise
        return client

    def negotiate(self) -> None:
        """Read the greeting and leave capabilities negotiation mode."""
        greeting = self._read(time.monotonic() + self.timeout, "the greeting")
        if "QMP" not in greeting:
            raise QMPConnectionError(f"not a QMP greeting: {greeting!r:.200}")
        self.greeting = greeting["QMP"]
        self.execute("qmp_capabilities")

    def execute(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run one command and return its ``return`` value."""
        request_id = f"nubes-{next(self._ids)}"
        message: dict[str, Any] = {"execute": command, "id": request_id}
        if arguments:
            message["arguments"] = dict(arguments)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._send(message, deadline, command)
        while True:
            answer = self._read(deadline, command)
            if answer.get("id") != request_id:
                log.debug("QMP: skipping %.200r while waiting for %s", answer, command)
                continue
            if "return" in answer:
                return answer["return"]
            error = answer.get("error")
            if isinstance(error, dict):
                raise QMPCommandError(
                    command, str(error.get("class", "?")), str(error.get("desc", ""))
                )
            raise QMPError(f"{command}: unexpected answer {answer!r:.200}")

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> QMPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- wire -----------------------------------------------------------------------------------

    def _send(self, message: Mapping[str, Any], deadline: float, what: str) -> None:
        data = json.dumps(message).encode() + b"\n"
        try:
            self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
            self._sock.sendall(data)
        except TimeoutError as exc:
            raise QMPTimeout(f"{what}: sending timed out") from exc
        except OSError as exc:
            raise QMPConnectionError(f"{what}: {exc}") from exc

    def _read(self, deadline: float, what: str) -> dict[str, Any]:
        """The next message that is not an event (events go to :attr:`events`)."""
        while True:
            message = self._read_message(deadline, what)
            if "event" in message:
                self.events.append(message)
                continue
            return message

    def _read_message(self, deadline: float, what: str) -> dict[str, Any]:
        while (end := self._buffer.find(b"\n")) < 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QMPTimeout(f"{what}: no answer from QEMU in time")
            if len(self._buffer) > MAX_MESSAGE:
                raise QMPConnectionError(f"{what}: a message longer than {MAX_MESSAGE} bytes")
            try:
                self._sock.settimeout(remaining)
                chunk = self._sock.recv(65536)
            except TimeoutError as exc:
                raise QMPTimeout(f"{what}: no answer from QEMU in time") from exc
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise QMPConnectionError(f"{what}: {exc}") from exc
            if not chunk:
                raise QMPConnectionError(f"{what}: QEMU closed the connection")
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise QMPConnectionError(f"{what}: not JSON: {line[:200]!r}") from exc
        if not isinstance(message, dict):
            raise QMPConnectionError(f"{what}: not a JSON object: {line[:200]!r}")
        return message
