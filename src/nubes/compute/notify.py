"""Wakes agents' long polls when the desired state of their host changes.

In one controller process a condition variable does it at once; with several controllers an
agent's long poll also re-reads the database every second, so a change made by another
controller is seen within a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable


class Notifier:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._versions: dict[str, int] = {}

    def version(self, host_id: str) -> int:
        with self._cond:
            return self._versions.get(host_id, 0)

    def changed(self, host_ids: Iterable[str | None]) -> None:
        with self._cond:
            for host_id in host_ids:
                if host_id:
                    self._versions[host_id] = self._versions.get(host_id, 0) + 1
            self._cond.notify_all()

    def wait(self, host_id: str, seen: int, timeout: float) -> int:
        """Block until the host's version passes ``seen`` or ``timeout`` elapses."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._versions.get(host_id, 0) <= seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._versions.get(host_id, 0)
