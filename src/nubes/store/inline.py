"""Run synchronous database code on the event loop's own thread, suspending where it waits.

A controller worker is one event loop. Service code (SQLAlchemy sessions, transactions) is
synchronous; run from a worker thread, every request pays two thread hops, and under load the
threads fight over the GIL: a thread holding SQLite's one write lock gives the GIL away at
each statement and waits for it behind the others, so every writer of every worker waits
longer. Measured on the boot+delete storm: 40 → 68 boot+delete/s and a third less CPU per
iteration with the hot paths run here instead.

:func:`run` runs a function in a greenlet on the loop's thread. The function runs to its end
without yielding, except where it calls :func:`suspend` with an awaitable (the database's
write turn, when another writer holds it): then the greenlet parks, the loop serves other
requests, and the function resumes with the awaitable's result. SQLAlchemy's asyncio layer is
built on the same idea. Where the end of a wait is worth more than a pass through the loop's
queue (the write turn, held meanwhile), whoever ends it may :func:`resume` the function right
there, from its callback; or, from code run here, the moment that code suspends or ends
(:func:`after_switch`), before the loop runs anything else.

Only code whose every wait goes through :func:`suspend` may run here: SQLite statements are
in-process CPU work, but PostgreSQL's wait on the network and on row locks, so
:meth:`nubes.store.db.Database.call` runs code here on SQLite only.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from greenlet import getcurrent, greenlet

T = TypeVar("T")


class _Inline(greenlet):  # type: ignore[misc]
    """A greenlet started by :func:`run`; its parent is the coroutine awaiting for it."""


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on this thread, awaiting whatever it :func:`suspend`\\ s on."""
    child = _Inline(lambda: fn(*args, **kwargs), parent=getcurrent())
    child.gr_context = contextvars.copy_context()
    result = _switched(child.switch)
    while not child.dead:
        try:
            value = await cast("Awaitable[Any]", result)
        except BaseException as exc:  # the waiter failed or was cancelled: raise it in fn
            result = _switched(child.throw, exc)
        else:
            if isinstance(value, _Ran):  # already resumed by :func:`resume`
                if value.error is not None:
                    raise value.error
                result = value.value
            else:
                result = _switched(child.switch, value)
    return cast("T", result)


def _switched(switch: Callable[..., Any], *args: Any) -> Any:
    """Switch into an inline function; once it is out (suspended, ended or raised), run
    what it left for then (:func:`after_switch`)."""
    try:
        return switch(*args)
    finally:
        _run_after_switch()


_thread = threading.local()


def after_switch(callback: Callable[[], None]) -> None:
    """From code run inline: call ``callback`` on this thread the moment the code suspends
    or ends, before the loop runs anything else. It must not raise."""
    pending: deque[Callable[[], None]] | None = getattr(_thread, "pending", None)
    if pending is None:
        pending = _thread.pending = deque()
    pending.append(callback)


def _run_after_switch() -> None:
    pending: deque[Callable[[], None]] | None = getattr(_thread, "pending", None)
    if not pending or getattr(_thread, "running", False):
        return  # a callback's own resume lands here: the outer call goes on with the rest
    _thread.running = True
    try:
        while pending:
            pending.popleft()()
    finally:
        _thread.running = False


@dataclass(frozen=True, slots=True)
class _Ran:
    """What came of a :func:`resume`: the code suspended again on ``value``, or ended
    returning ``value``, or raised ``error``."""

    value: Any = None
    error: BaseException | None = None


def resume(child: object, waited: asyncio.Future[Any], value: Any = None) -> None:
    """From a callback on the loop (or one of :func:`after_switch`): resume ``child`` (an
    :func:`owner`, suspended on the future ``waited``) now, its :func:`suspend` returning
    ``value``, rather than when its task next runs (one more pass through the loop's queue),
    and hand what came of it to its :func:`run` through ``waited``. For a wait whose end is
    worth more than a pass: the database's write turn, held meanwhile."""
    assert isinstance(child, _Inline)
    try:
        ran = _Ran(child.switch(value))
    except BaseException as exc:
        ran = _Ran(error=exc)
    waited.set_result(ran)
    _run_after_switch()


def suspendable() -> bool:
    """Whether the calling code runs under :func:`run` (so it may :func:`suspend`)."""
    return isinstance(getcurrent(), _Inline)


def suspend(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` on the event loop, letting it serve others meanwhile. Only
    where :func:`suspendable` is true."""
    current = getcurrent()
    if not isinstance(current, _Inline):
        raise RuntimeError("suspend() outside inline.run()")
    return cast("T", current.parent.switch(awaitable))


def owner() -> object:
    """Who runs the calling code: its greenlet, one per thread and per :func:`run` call.
    Locks held across a :func:`suspend` must belong to this, not to the thread."""
    return getcurrent()
