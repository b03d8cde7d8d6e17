"""nubes.store.inline: synchronous code on the event loop's thread, suspending where it waits."""

from __future__ import annotations

import asyncio
import threading

import pytest

from nubes.store import inline


def test_runs_on_the_loop_thread_and_returns_or_raises() -> None:
    async def main() -> None:
        loop_thread = threading.get_ident()
        assert await inline.run(lambda a, b=0: (threading.get_ident(), a + b), 1, b=2) == (
            loop_thread,
            3,
        )

        def fails() -> None:
            raise ValueError("from inside")

        with pytest.raises(ValueError, match="from inside"):
            await inline.run(fails)

    asyncio.run(main())


def test_suspend_lets_the_loop_serve_others_and_resumes_with_the_result() -> None:
    order: list[str] = []

    async def later(value: int) -> int:
        order.append("awaited")
        await asyncio.sleep(0.01)
        return value * 2

    def sync_code() -> int:
        order.append("before")
        assert inline.suspendable()
        got = inline.suspend(later(21))
        order.append("after")
        return got

    async def other() -> None:
        order.append("other ran")

    async def main() -> None:
        results = await asyncio.gather(inline.run(sync_code), other())
        assert results[0] == 42

    asyncio.run(main())
    assert order == ["before", "awaited", "other ran", "after"]


def test_a_failed_or_cancelled_wait_raises_inside_the_code() -> None:
    seen: list[str] = []

    async def fails() -> None:
        raise LookupError("waited for nothing")

    def catches() -> str:
        try:
            inline.suspend(fails())
        except LookupError as exc:
            return str(exc)
        return "no error"

    def waits_forever() -> None:
        try:
            inline.suspend(asyncio.sleep(3600))
        except asyncio.CancelledError:
            seen.append("cancelled inside")
            raise

    async def main() -> None:
        assert await inline.run(catches) == "waited for nothing"
        task = asyncio.create_task(inline.run(waits_forever))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert seen == ["cancelled inside"]


def test_outside_run_there_is_nothing_to_suspend_to() -> None:
    assert not inline.suspendable()
    awaitable = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="outside"):
        inline.suspend(awaitable)
    awaitable.close()


def test_each_run_is_its_own_owner_on_one_thread() -> None:
    async def main() -> None:
        owners = await asyncio.gather(inline.run(inline.owner), inline.run(inline.owner))
        assert owners[0] is not owners[1]
        assert inline.owner() not in owners

    asyncio.run(main())


def test_resume_runs_the_code_on_from_a_callback_at_once() -> None:
    """A wait ended by :func:`inline.resume` goes on inside the callback that ends it, not
    on a later pass of the loop; what it does next (suspend again, return, raise) reaches
    its :func:`inline.run` as usual."""
    order: list[str] = []
    owner: list[object] = []

    def sync_code(waited: asyncio.Future[object], fail: bool) -> str:
        owner.append(inline.owner())
        inline.suspend(waited)
        order.append("resumed")
        assert asyncio.current_task() is None  # inside the callback, not the task
        inline.suspend(asyncio.sleep(0))  # and it may wait again afterwards
        if fail:
            raise ValueError("after the resume")
        return "done"

    async def main(fail: bool) -> str:
        loop = asyncio.get_running_loop()
        waited: asyncio.Future[object] = loop.create_future()
        task = asyncio.create_task(inline.run(sync_code, waited, fail))
        await asyncio.sleep(0)

        def callback() -> None:
            inline.resume(owner.pop(), waited)
            order.append("callback returned")

        loop.call_soon(callback)
        return await task

    assert asyncio.run(main(False)) == "done"
    assert order == ["resumed", "callback returned"]
    with pytest.raises(ValueError, match="after the resume"):
        asyncio.run(main(True))


def test_after_switch_runs_the_moment_the_code_suspends_ends_or_raises() -> None:
    """Before anything the loop had queued meanwhile, and on from callbacks it left for then
    (each once, in order)."""
    order: list[str] = []

    def code(name: str, then: str, fail: bool = False) -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(order.append, f"{name}: loop")
        inline.after_switch(lambda: order.append(f"{name}: {then}"))
        inline.after_switch(lambda: inline.after_switch(lambda: order.append(f"{name}: more")))
        if fail:
            raise RuntimeError(name)
        if then == "suspended":
            inline.suspend(asyncio.sleep(0))
            order.append(f"{name}: resumed")

    async def main() -> None:
        await inline.run(code, "a", "ended")
        await inline.run(code, "b", "suspended")
        with pytest.raises(RuntimeError):
            await inline.run(code, "c", "raised", fail=True)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert order == [
        "a: ended",
        "a: more",
        "b: suspended",
        "b: more",
        "a: loop",
        "b: loop",
        "b: resumed",
        "c: raised",
        "c: more",
        "c: loop",
    ]
