"""The long-poll notifier: waiters wake on their host's change, or time out; never fail."""

from __future__ import annotations

import asyncio
import threading
import time

from nubes.compute.notify import Notifier


def test_a_host_that_never_changed_times_out_at_its_first_version():
    notifier = Notifier()
    first = notifier.version("h1")
    started = time.monotonic()
    assert asyncio.run(notifier.wait("h1", -1, 5)) == first  # already past "seen": no wait
    assert asyncio.run(notifier.wait("h1", first, 0.05)) == first
    assert time.monotonic() - started < 2


def test_a_change_from_another_thread_wakes_the_waiter_at_once():
    notifier = Notifier()
    first = notifier.version("h1")

    async def waiter() -> tuple[int, float]:
        started = time.monotonic()
        version = await notifier.wait("h1", first, 10)
        return version, time.monotonic() - started

    def change() -> None:
        time.sleep(0.1)
        notifier.changed(["h2", None, "h1"])

    threading.Thread(target=change).start()
    version, waited = asyncio.run(waiter())
    assert version == first + 1
    assert waited < 5
    assert notifier.version("h2") == first + 1
    assert notifier.version("h3") == first


def test_a_restarted_controller_never_repeats_a_version_an_agent_saw():
    """An agent that saw version v of a host and polls a new controller must not be told
    "unchanged": the new controller knows nothing of what the old one handed out."""
    old = Notifier()
    for _ in range(5):
        old.changed(["h1"])
    seen = old.version("h1")
    time.sleep(0.01)
    assert Notifier().version("h1") > seen
