"""The long-poll notifier: waiters wake on their host's change, or time out; never fail."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from nubes.compute.notify import Notifier, Peers


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
    assert version > first
    assert waited < 5
    assert notifier.version("h2") > first
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


def test_every_new_version_is_above_every_earlier_one_of_any_host():
    """A Lamport clock: an agent may carry a version from one worker to another."""
    notifier = Notifier()
    notifier.changed(["h1"])
    one = notifier.version("h1")
    notifier.changed(["h2"])
    two = notifier.version("h2")
    assert two > one
    notifier.changed_all()
    everyone = notifier.version("h3")
    assert everyone > two
    assert notifier.version("h1") == notifier.version("h2") == everyone


@pytest.fixture
def workers():
    """Two workers' notifiers, joined as a controller's workers are."""
    group = f"test-{time.monotonic_ns()}"
    peers = [Peers(group, i, 2) for i in range(2)]
    yield [Notifier(p) for p in peers]
    for p in peers:
        p.close()


def test_a_change_through_one_worker_wakes_a_long_poll_on_another(workers):
    a, b = workers

    async def poll() -> tuple[int, float]:
        b.listen(asyncio.get_running_loop())
        seen = b.version("h1")
        started = time.monotonic()
        asyncio.get_running_loop().call_later(0.1, a.changed, ["h1"])
        version = await b.wait("h1", seen, 10)
        b.close(asyncio.get_running_loop())
        return version - seen, time.monotonic() - started

    moved, waited = asyncio.run(poll())
    assert moved > 0
    assert waited < 5
    assert b.version("h1") == a.version("h1")  # the same version: either worker may answer


def test_a_network_change_through_one_worker_ends_every_long_poll_on_another(workers):
    a, b = workers

    async def poll() -> int:
        b.listen(asyncio.get_running_loop())
        seen = b.version("h9")
        asyncio.get_running_loop().call_later(0.1, a.changed_all)
        version = await b.wait("h9", seen, 10)
        b.close(asyncio.get_running_loop())
        return version - seen

    assert asyncio.run(poll()) > 0
    assert b.version("h9") == a.version("h9")


def test_what_a_peer_says_never_lowers_a_version():
    notifier = Notifier()
    notifier.changed(["h1"])
    now = notifier.version("h1")
    notifier.heard({"hosts": {"h1": now - 5, "h2": "junk"}, "all": "junk"})
    assert notifier.version("h1") == now
    notifier.heard({"hosts": {"h1": now + 7}})
    assert notifier.version("h1") == now + 7
    notifier.changed(["h2"])
    assert notifier.version("h2") > now + 7  # heard versions move the clock too


def test_a_peer_that_is_not_there_costs_the_sender_nothing():
    """A worker restarting (its socket gone) must not fail or stall a change elsewhere."""
    peers = Peers(f"test-{time.monotonic_ns()}", 0, 3)
    try:
        started = time.monotonic()
        Notifier(peers).changed(["h1"])
        assert time.monotonic() - started < 0.5
    finally:
        peers.close()
