"""The long-poll notifier: waiters wake on their host's change, or time out; never fail."""

from __future__ import annotations

import asyncio
import threading
import time

from nubes.compute.notify import Notifier


def test_a_host_that_never_changed_times_out_at_version_zero():
    notifier = Notifier()
    started = time.monotonic()
    assert asyncio.run(notifier.wait("h1", -1, 5)) == 0  # already past "seen": no wait
    assert asyncio.run(notifier.wait("h1", 0, 0.05)) == 0
    assert time.monotonic() - started < 2


def test_a_change_from_another_thread_wakes_the_waiter_at_once():
    notifier = Notifier()

    async def waiter() -> tuple[int, float]:
        started = time.monotonic()
        version = await notifier.wait("h1", 0, 10)
        return version, time.monotonic() - started

    def change() -> None:
        time.sleep(0.1)
        notifier.changed(["h2", None, "h1"])

    threading.Thread(target=change).start()
    version, waited = asyncio.run(waiter())
    assert version == 1
    assert waited < 5
    assert notifier.version("h2") == 1
    assert notifier.version("h3") == 0
