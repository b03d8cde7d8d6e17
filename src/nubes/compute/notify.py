"""Wakes agents' long polls when the desired state of their host changes.

In one controller process the waiters are woken at once (each long poll's ``asyncio.Event`` is
set on its own loop). The worker processes of one
controller (``workers`` in nubes.toml) tell each other by datagrams (:class:`Peers`), so an
agent waiting on one worker wakes for an instance created through another. Controllers on other
machines are not told: there an agent's long poll ends after its ``wait`` and re-reads the
database, so such a change is seen within one watch period.

Versions are a Lamport clock in microseconds: every new version is above every version this
process has made or heard, and above the clock. So versions from different workers (and from a
restarted controller) compare: an agent may ask any worker with the version another gave it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("nubes.compute.notify")

#: a peer that does not drain its socket this long is skipped (it is restarting or stuck);
#: its agents then see the change at the end of their long poll
SEND_TIMEOUT = 0.5

Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Event]


class Peers:
    """The other worker processes of this controller, reached by datagrams on abstract Unix
    sockets (Linux: no file to clean up, gone with the process). ``group`` names the
    controller (its supervisor's PID), ``index`` this worker."""

    def __init__(self, group: str, index: int, count: int) -> None:
        self.index = index
        #: where this worker's share of anything split among the workers starts, as a fraction
        self.share = index / count
        self._addresses = [f"\0nubes-notify-{group}-{i}" for i in range(count) if i != index]
        self.inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.inbox.bind(f"\0nubes-notify-{group}-{index}")
        self.inbox.setblocking(False)
        self._outbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._outbox.settimeout(SEND_TIMEOUT)
        self._send_lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        with self._send_lock:
            for address in self._addresses:
                try:
                    self._outbox.sendto(data, address)
                except OSError as exc:  # not started yet, restarting, or not draining
                    log.debug("notify %r: %s", address[1:], exc)

    def receive(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while True:
            try:
                data = self.inbox.recv(1 << 20)
            except BlockingIOError:
                return messages
            try:
                messages.append(json.loads(data))
            except ValueError:
                log.warning("notify: a malformed message from a peer was dropped")

    def close(self) -> None:
        self.inbox.close()
        self._outbox.close()


class Notifier:
    def __init__(self, peers: Peers | None = None) -> None:
        self._lock = threading.Lock()
        self._peers = peers
        #: every host starts at the clock: a restarted controller never hands out a version
        #: an agent already saw (which it would take for "unchanged")
        self._base = self._high = time.time_ns() // 1000
        self._versions: dict[str, int] = {}
        #: set by changed_all: every host's version is at least this
        self._everyone = 0
        self._waiters: defaultdict[str, set[Waiter]] = defaultdict(set)

    def _tick(self) -> int:
        self._high = max(self._high + 1, time.time_ns() // 1000)
        return self._high

    def _version(self, host_id: str) -> int:
        return max(self._versions.get(host_id, self._base), self._everyone)

    def version(self, host_id: str) -> int:
        with self._lock:
            return self._version(host_id)

    def changed(self, host_ids: Iterable[str | None]) -> None:
        told: dict[str, int] = {}
        wake: list[Waiter] = []
        with self._lock:
            for host_id in host_ids:
                if host_id:
                    told[host_id] = self._versions[host_id] = self._tick()
                    wake.extend(self._waiters.pop(host_id, ()))
        _wake(wake)
        if told and self._peers is not None:
            self._peers.send({"hosts": told})

    def changed_all(self) -> None:
        """Something every host may depend on changed (a network, a security group rule):
        every host's version moves and every waiting long poll ends."""
        with self._lock:
            self._everyone = self._tick()
            everyone = self._everyone
            wake = [w for waiters in self._waiters.values() for w in waiters]
            self._waiters.clear()
        _wake(wake)
        if self._peers is not None:
            self._peers.send({"all": everyone})

    def heard(self, message: dict[str, Any]) -> None:
        """A peer's change: take its versions (never lower ours) and wake who waits on them.
        Not passed on: every peer told every other itself."""
        wake: list[Waiter] = []
        with self._lock:
            everyone = message.get("all")
            if isinstance(everyone, int) and everyone > self._everyone:
                self._everyone = everyone
                self._high = max(self._high, everyone)
                wake = [w for waiters in self._waiters.values() for w in waiters]
                self._waiters.clear()
            hosts = message.get("hosts")
            for host_id, version in hosts.items() if isinstance(hosts, dict) else ():
                if isinstance(version, int) and version > self._version(host_id):
                    self._versions[host_id] = version
                    self._high = max(self._high, version)
                    wake.extend(self._waiters.pop(host_id, ()))
        _wake(wake)

    def listen(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take peers' messages on ``loop`` (the worker's event loop), as they arrive."""
        peers = self._peers
        if peers is None:
            return

        def drain() -> None:
            for message in peers.receive():
                self.heard(message)

        loop.add_reader(peers.inbox.fileno(), drain)

    def close(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self._peers is not None:
            if loop is not None:
                loop.remove_reader(self._peers.inbox.fileno())
            self._peers.close()

    async def wait(self, host_id: str, seen: int, timeout: float) -> int:
        """Until the host's version passes ``seen``, or ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        with self._lock:
            current = self._version(host_id)
            if current > seen:
                return current
            self._waiters[host_id].add((loop, event))
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.get(host_id, set()).discard((loop, event))
        return self.version(host_id)


def _wake(waiters: list[Waiter]) -> None:
    for loop, event in waiters:
        loop.call_soon_threadsafe(event.set)
