"""Wakes agents' long polls when the desired state of their host changes.

In one controller process the waiters are woken at once (threads through a condition, async
handlers through an ``asyncio.Event`` set on their own loop); with several controllers an
agent's long poll also ends after its ``wait`` and re-reads the database, so a change made by
another controller is seen within one watch period.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Iterable


class Notifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        #: Versions start from the clock, so a restarted controller never hands out a version
        #: an agent already saw (which it would take for "unchanged").
        self._base = int(time.time() * 1000) * 1024
        #: bumped by changed_all: added to every host's version, seen or not
        self._everyone = 0
        self._waiters: defaultdict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]]
        self._waiters = defaultdict(set)

    def version(self, host_id: str) -> int:
        with self._lock:
            return self._versions.get(host_id, self._base) + self._everyone

    def changed(self, host_ids: Iterable[str | None]) -> None:
        wake: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        with self._lock:
            for host_id in host_ids:
                if host_id:
                    self._versions[host_id] = self._versions.get(host_id, self._base) + 1
                    wake.extend(self._waiters.pop(host_id, ()))
        for loop, event in wake:
            loop.call_soon_threadsafe(event.set)

    def changed_all(self) -> None:
        """Something every host may depend on changed (a network, a security group rule):
        every host's version moves and every waiting long poll ends."""
        with self._lock:
            self._everyone += 1
            wake = [w for waiters in self._waiters.values() for w in waiters]
            self._waiters.clear()
        for loop, event in wake:
            loop.call_soon_threadsafe(event.set)

    async def wait(self, host_id: str, seen: int, timeout: float) -> int:
        """Until the host's version passes ``seen``, or ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        with self._lock:
            current = self._versions.get(host_id, self._base) + self._everyone
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
