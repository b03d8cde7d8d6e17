"""Engines and transactions.

SQLite runs in WAL mode with a busy timeout, and every write transaction starts with
``BEGIN IMMEDIATE`` so two writers queue for the lock instead of failing on an upgrade
(SQLAlchemy's documented pysqlite recipe). PostgreSQL runs at READ COMMITTED; races are
guarded by conditional updates and unique constraints, never by hoping.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import anyio.to_thread
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from nubes.domain.errors import InvalidInput, Unavailable
from nubes.store import inline

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: WAL pages after which a commit checkpoints by itself. SQLite's default (1,000) has the
#: committing writer copy the log into the database file and fsync it while it holds the one
#: write turn: in the boot storm a tenth of the turn's time went to such stalls of 20 ms and
#: more. The controller checkpoints from its ``wal-checkpoint`` loop instead, outside the
#: turn (:meth:`Database.checkpoint`); this is the ceiling when nothing does (40 MB).
SQLITE_AUTOCHECKPOINT_PAGES = 10_000
#: A request of an event loop that ends its write while another request of the same loop
#: waits hands the turn straight to it, without the file lock going to another process in
#: between, until the turn has been this process's for this long (then the other workers
#: get their go). A hand-over between processes costs a thread's wake-up and a pass of the
#: other loop with the turn held and no one writing; within a loop, one pass.
KEEP_TURN_SECONDS = 0.004
T = TypeVar("T")


class _LoopQueue:
    """The requests of one event loop that want the write turn, one at a time, in order.
    Each enters (waiting behind the one in), then takes the turn, then leaves: handing the
    queue to the next, and the turn with it when it is kept (:data:`KEEP_TURN_SECONDS`).
    A request handed a kept turn runs on the moment the one before suspends or ends
    (:func:`inline.after_switch`), not a pass of the loop later."""

    __slots__ = ("busy", "waiters")

    def __init__(self) -> None:
        self.busy = False
        #: each resolves to whether the turn comes with the queue; with the request's owner
        self.waiters: deque[tuple[asyncio.Future[bool], object]] = deque()

    def enter(self, db: Database) -> bool:
        """In a request run inline: wait for the queue. True when the request before kept
        the turn for this one."""
        if not self.busy:
            self.busy = True
            return False
        entered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiters.append((entered, inline.owner()))
        try:
            return inline.suspend(entered)
        except BaseException:
            # cancelled just as the queue (and perhaps the turn) came: pass them on
            if entered.done() and not entered.cancelled():
                self.leave(db, holding=entered.result())
            raise

    def leave(self, db: Database, *, holding: bool, keep: bool = True) -> None:
        """Hand the queue to the next request still waiting, and the turn the caller is
        ``holding`` with it when ``keep``; a held turn that does not go on is given back."""
        while self.waiters:
            entered, request = self.waiters.popleft()
            if entered.done():  # cancelled
                continue
            if holding and keep:
                inline.after_switch(functools.partial(self._run_on, db, entered, request))
                return
            entered.set_result(False)
            break
        else:
            self.busy = False
        if holding:
            db._give_back()

    def _run_on(self, db: Database, entered: asyncio.Future[bool], request: object) -> None:
        """Run on the request handed the kept turn; cancelled meanwhile, pass it on."""
        if entered.done():
            self.leave(db, holding=True)
        else:
            inline.resume(request, entered, True)


@dataclass(frozen=True, eq=False)
class _Watch:
    tables: frozenset[str]
    callback: Callable[[], None]


class Database:
    """One engine and its session factory. Thread-safe; share one per process."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            # As many pooled connections as the server has worker threads (40): an overflow
            # connection is closed after each use and re-opened, PRAGMAs and all.
            kwargs.update(pool_size=40, max_overflow=20)
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=True)
        self.engine: Engine = create_engine(url, **kwargs)
        self._lock_path: Path | None = None
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
            if parsed.database and parsed.database != ":memory:":
                self._lock_path = Path(f"{parsed.database}.writer-lock")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        #: SQLite has one writer at a time. Writers queue here, in order, rather than in
        #: SQLite's busy handler, which sleeps in growing steps (up to 100 ms) between tries:
        #: under load that left the CPU idle and requests waiting seconds. The threads of this
        #: process queue on the lock, processes (the workers of a controller, the CLI) on an
        #: flock of ``nubes.db.writer-lock``, which the kernel hands on the moment it is freed.
        #: The turn belongs to whoever runs the code (:func:`nubes.store.inline.owner`): a
        #: thread, or a request run inline on the event loop, which waits for its turn
        #: without blocking the loop (the requests of one loop queue in a :class:`_LoopQueue`).
        self._writer = threading.Lock()
        self._writer_owner: object | None = None
        self._writer_depth = 0
        self._loop_queues: WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue] = (
            WeakKeyDictionary()
        )
        self._writer_queue: _LoopQueue | None = None  # the loop queue the holder came by
        self._turn_taken_at = 0.0  # when this process last took the turn from the others
        self._lock_fd: int | None = None
        #: threads that wait for the turn on behalf of the event loops' requests
        self._turn_waiters = ThreadPoolExecutor(8, thread_name_prefix="nubes-write-turn")
        #: run service code inline on the event loop (:meth:`call`): SQLite's statements are
        #: CPU work in this process; PostgreSQL's wait on the network and on row locks
        self.inline = self.dialect == "sqlite"
        #: what :meth:`watch` calls back; one set of session listeners serves them all
        self._watches: list[_Watch] = []

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any exception."""
        try:
            session = self._sessions()
        except OperationalError as exc:
            raise Unavailable(f"database error: {exc.orig}") from exc
        queued = self.dialect == "sqlite" and write
        try:
            if queued:
                self._acquire_writer()
            if self.dialect == "sqlite":
                session.connection(
                    execution_options={"sqlite_begin": "BEGIN IMMEDIATE" if write else "BEGIN"}
                )
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            raise Unavailable(f"database error: {exc.orig}") from exc
        except DataError as exc:
            # A value the engine cannot store (PostgreSQL: NUL in text, numbers out of range):
            # the request's fault, not the server's.
            session.rollback()
            raise InvalidInput(f"a value cannot be stored: {exc.orig}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
            if queued and self.holds_write_turn():
                self._release_writer()

    def holds_write_turn(self) -> bool:
        """Whether the calling code (thread or inline request) holds the write turn."""
        return self._writer_owner is inline.owner()

    def _acquire_writer(self) -> None:
        me = inline.owner()
        if self._writer_owner is me:
            self._writer_depth += 1  # a nested write transaction: the turn is already ours
            return
        if inline.suspendable():
            self._take_turn_inline()
        else:
            self._take_turn()
        self._writer_owner, self._writer_depth = me, 1

    def _release_writer(self) -> None:
        self._writer_depth -= 1
        if self._writer_depth:
            return
        self._writer_owner = None
        queue, self._writer_queue = self._writer_queue, None
        if queue is None:
            self._give_back()
            return
        keep = time.monotonic() - self._turn_taken_at < KEEP_TURN_SECONDS
        queue.leave(self, holding=True, keep=keep)

    def _take_turn(self, wait: bool = True) -> bool:
        """The process's lock, then the file lock: both, or neither. Without ``wait``, only
        if neither is held (False otherwise)."""
        if not self._writer.acquire(blocking=wait):
            return False
        try:
            if self._lock_path is not None:
                flags = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
                fcntl.flock(self._lock_file(), flags)
        except BlockingIOError:
            self._writer.release()
            return False
        except OSError as exc:
            self._writer.release()
            raise Unavailable(f"cannot lock {self._lock_path}: {exc}") from exc
        except BaseException:
            self._writer.release()
            raise
        self._turn_taken_at = time.monotonic()
        return True

    def _give_back(self) -> None:
        if self._lock_path is not None and self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        self._writer.release()

    def _lock_file(self) -> int:
        if self._lock_fd is None:
            assert self._lock_path is not None
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._lock_fd

    def _take_turn_inline(self) -> None:
        """The write turn for a request run inline on the event loop: after the loop's
        earlier requests, then at once if free, else waited for in a thread (one per loop at
        a time) while the loop serves others. The thread hands the turn to the request on
        the loop, which runs the request's transaction at once (:func:`inline.resume`): every
        pass through the loop's queue meanwhile would be time the turn is held with no one
        writing. Cancelled meanwhile, the turn is given back as soon as it comes. The request
        before on the same loop may have kept the turn for this one (:class:`_LoopQueue`)."""
        loop = asyncio.get_running_loop()
        queue = self._loop_queues.get(loop)
        if queue is None:
            queue = self._loop_queues[loop] = _LoopQueue()
        kept = queue.enter(self)
        try:
            if not kept and not self._take_turn(wait=False):
                handed: asyncio.Future[Any] = loop.create_future()
                abandoned = threading.Event()
                self._turn_waiters.submit(
                    self._wait_for_turn, loop, handed, inline.owner(), abandoned
                )
                try:
                    inline.suspend(handed)
                except BaseException:
                    abandoned.set()  # the thread gives the turn back itself, loop or not
                    raise
        except BaseException:
            queue.leave(self, holding=False)
            raise
        self._writer_queue = queue

    def _wait_for_turn(
        self,
        loop: asyncio.AbstractEventLoop,
        handed: asyncio.Future[Any],
        request: object,
        abandoned: threading.Event,
    ) -> None:
        """In a waiting thread: take the turn (or fail to), then hand it to ``request`` on
        its loop; or give it back at once when the request gave up meanwhile (its loop may
        have ended since, and would never run the hand-over)."""
        error: BaseException | None = None
        try:
            self._take_turn()
        except BaseException as exc:
            error = exc
        if abandoned.is_set():
            if error is None:
                self._give_back()
            return
        try:
            loop.call_soon_threadsafe(_hand_over, self, handed, request, error)
        except RuntimeError:  # the loop closed while this waited: nobody will write
            if error is None:
                self._give_back()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` (service code using this database) from the event loop: inline on
        SQLite (:mod:`nubes.store.inline`), in a worker thread on PostgreSQL."""
        if self.inline:
            return await inline.run(fn, *args, **kwargs)
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A Core connection for hot read paths (token validation): no ORM session to build.
        Rolled back on exit; never use it to write."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise Unavailable(f"database error: {exc.orig}") from exc
        except DataError as exc:
            raise InvalidInput(f"a value cannot be stored: {exc.orig}") from exc

    def read(self) -> AbstractContextManager[Session]:
        """A read-only unit of work (on SQLite a deferred BEGIN: readers never queue)."""
        return self.transaction(write=False)

    def watch(self, tables: Iterable[str], callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after each commit of a transaction that wrote rows of any of
        ``tables``, through the ORM or a statement (in the committing thread, once the data
        is visible to others). A rolled-back transaction calls nothing: its session, and the
        mark in it, are thrown away (every transaction has its own session). Returns the
        function that stops the watch."""
        if not self._watches:
            event.listen(self._sessions, "after_flush", self._flushed)
            event.listen(self._sessions, "do_orm_execute", self._executed)
            event.listen(self._sessions, "after_commit", self._committed)
        watch = _Watch(frozenset(tables), callback)
        self._watches.append(watch)

        def stop() -> None:
            if watch in self._watches:
                self._watches.remove(watch)

        return stop

    def _flushed(self, session: Session, _context: Any) -> None:
        written = {
            getattr(row, "__tablename__", None)
            for row in (*session.new, *session.dirty, *session.deleted)
        }
        for watch in self._watches:
            if not watch.tables.isdisjoint(written):
                session.info[watch] = True

    def _executed(self, state: ORMExecuteState) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            name = getattr(getattr(state.statement, "table", None), "name", None)
            for watch in self._watches:
                if name in watch.tables:
                    state.session.info[watch] = True

    def _committed(self, session: Session) -> None:
        for watch in list(self._watches):
            if session.info.pop(watch, False):
                watch.callback()

    def checkpoint(self) -> None:
        """Copy what the SQLite write-ahead log holds into the database file, beside the
        writers rather than in one's commit: a passive checkpoint waits for no one and takes
        no write turn (the fsync it ends with no longer stalls every writer of every worker).
        Nothing to do on PostgreSQL."""
        if self.dialect != "sqlite":
            return
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            cursor.fetchall()
            cursor.close()
        except sqlite3.Error as exc:
            raise Unavailable(f"database checkpoint: {exc}") from exc
        finally:
            raw.close()

    def dispose(self) -> None:
        self._turn_waiters.shutdown(wait=False)
        self.engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite; we emit BEGIN ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # straight to pysqlite: a write transaction's BEGIN IMMEDIATE runs inside the write
        # turn, where SQLAlchemy's statement machinery cost ten times the statement
        begin = conn.get_execution_options().get("sqlite_begin", "BEGIN")
        try:
            conn.connection.dbapi_connection.execute(begin)
        except sqlite3.Error as exc:
            raise OperationalError(begin, None, exc) from exc


def _hand_over(
    db: Database, handed: asyncio.Future[Any], request: object, error: BaseException | None
) -> None:
    """On the waiting request's loop: run the request on with the turn (or raise why not in
    it), or give the turn back at once if the request was cancelled meanwhile."""
    if handed.cancelled():
        if error is None:
            db._give_back()
    elif error is not None:
        handed.set_exception(error)
    else:
        inline.resume(request, handed)
