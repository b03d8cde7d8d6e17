"""The store: migrations equal the models, compare-and-swap, SQLite settings, bootstrap."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
import threading
from collections.abc import Iterator

import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text, update

from nubes.api.app import _run_loops
from nubes.controller.bootstrap import initialise
from nubes.domain.errors import GenerationConflict, Unavailable
from nubes.store import inline
from nubes.store.cas import compare_and_swap
from nubes.store.db import Database
from nubes.store.migrate import current_revision, head_revision
from nubes.store.models import Base, Flavor, Host, Project
from tests.conftest import engine_name


def test_migrations_match_models(migrated):
    assert current_revision(migrated) == head_revision()
    with migrated.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []


def test_compare_and_swap_detects_a_lost_update(cloud):
    db = cloud.services.db
    with db.transaction() as s:
        flavor = s.scalar(select(Flavor).where(Flavor.name == "m1.tiny"))
        seen = flavor.generation
    with db.transaction() as s:
        assert compare_and_swap(s, Flavor, flavor.id, seen, {"description": "first"}) == seen + 1
    with pytest.raises(GenerationConflict), db.transaction() as s:
        compare_and_swap(s, Flavor, flavor.id, seen, {"description": "second"})
    with db.read() as s:
        assert s.get(Flavor, flavor.id).description == "first"


def test_engine_settings(cloud):
    """SQLite: WAL and foreign keys on. PostgreSQL: READ COMMITTED, which the guarded updates
    are written for."""
    db = cloud.services.db
    with db.read() as s:
        if db.dialect == "sqlite":
            assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
        else:
            assert s.execute(text("SHOW transaction_isolation")).scalar() == "read committed"


def test_bootstrap_is_idempotent_and_writes_private_files(cloud, settings):
    first = cloud.admin_password
    again = initialise(settings, cloud.services.db)
    assert again.created is False
    assert again.admin_password == first
    with cloud.services.db.read() as s:
        assert len(s.scalars(select(Project)).all()) == 1
        assert len(s.scalars(select(Flavor)).all()) == 5
    for name in ("admin-password", "admin-openrc.sh", "clouds.yaml", "credential.key"):
        mode = stat.S_IMODE((settings.state_dir / name).stat().st_mode)
        assert mode == 0o600, name
    clouds = yaml.safe_load((settings.state_dir / "clouds.yaml").read_text())
    assert clouds["clouds"]["nubes"]["auth"]["username"] == "admin"
    assert clouds["clouds"]["nubes"]["auth"]["password"] == first
    openrc = (settings.state_dir / "admin-openrc.sh").read_text()
    assert f"export NUBES_URL=http://127.0.0.1:{settings.port}" in openrc
    assert stat.S_IMODE(settings.state_dir.stat().st_mode) == 0o700


def test_remembered_port_is_read_back(tmp_path):
    from nubes.config import load_settings
    from nubes.controller.bootstrap import remember

    (tmp_path / "nubes.toml").write_text('log_level = "debug"\n[password_hashing]\ntime_cost = 3\n')
    remember(tmp_path, port=9999, listen_host="127.0.0.1")
    remember(tmp_path, port=9998)
    settings = load_settings(tmp_path)
    assert settings.port == 9998
    assert settings.listen_host == "127.0.0.1"
    assert settings.log_level == "debug"
    assert settings.password_hashing.time_cost == 3


def test_a_watch_calls_back_after_commits_that_wrote_its_tables_until_stopped(cloud):
    db, calls = cloud.services.db, []
    stop = db.watch(["flavors"], lambda: calls.append("flavors"))
    with db.transaction() as session:
        session.execute(update(Flavor).values(description="x"))
    with db.transaction() as session:  # another table
        session.execute(update(Host).values(error=""))

    def rolled_back() -> None:
        with db.transaction() as session:
            session.execute(update(Flavor).values(description="y"))
            raise RuntimeError

    with pytest.raises(RuntimeError):
        rolled_back()
    assert calls == ["flavors"]
    stop()
    with db.transaction() as session:
        session.execute(update(Flavor).values(description="z"))
    assert calls == ["flavors"]


def test_services_closed_leave_no_watch_on_a_database_they_share(cloud):
    """Every test builds services on the suite's one database: each left its watch (and its
    session listeners) behind, so late tests ran hundreds of listeners per statement."""
    assert len(cloud.services.db._watches) == 1  # only these services'


# the write turn: threads, and requests run inline on the event loop ----------------------

sqlite_only = pytest.mark.skipif(
    engine_name() != "sqlite", reason="the write turn queues SQLite's one writer"
)


@contextlib.contextmanager
def turn_held_by_a_thread(db: Database) -> Iterator[threading.Event]:
    """A thread inside a write transaction until the yielded event is set."""
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert inside.wait(10)
    try:
        yield leave
    finally:
        leave.set()
        thread.join(10)


@sqlite_only
def test_an_inline_writer_waits_for_the_turn_without_blocking_the_loop(cloud):
    db = cloud.services.db
    order: list[str] = []

    def write() -> bool:
        with db.transaction():
            order.append("written")
            return db.holds_write_turn()

    async def main(leave: threading.Event) -> None:
        writer = asyncio.create_task(db.call(write))
        for _ in range(5):  # the loop goes on while the writer waits
            await asyncio.sleep(0.01)
            order.append("tick")
        assert not writer.done()
        leave.set()
        assert await asyncio.wait_for(writer, 10) is True

    with turn_held_by_a_thread(db) as leave:
        asyncio.run(main(leave))
    assert order == ["tick"] * 5 + ["written"]
    assert another_writer_gets_the_turn(db)


@sqlite_only
def test_two_inline_writers_on_one_thread_take_turns(cloud):
    """The turn belongs to a request, not to the thread: a second request on the same loop
    (the same thread) waits while the first holds it, even if the first waits meanwhile."""
    db = cloud.services.db
    order: list[str] = []

    def write(name: str, pause: float) -> None:
        with db.transaction():
            order.append(f"{name} in")
            inline.suspend(asyncio.sleep(pause))
            order.append(f"{name} out")

    async def main() -> None:
        first = asyncio.create_task(db.call(write, "first", 0.05))
        await asyncio.sleep(0.01)
        await asyncio.gather(first, db.call(write, "second", 0))

    asyncio.run(main())
    assert order == ["first in", "first out", "second in", "second out"]


@sqlite_only
def test_a_request_cancelled_while_waiting_gives_the_turn_back(cloud):
    db = cloud.services.db

    def write() -> None:
        with db.transaction():
            pytest.fail("a cancelled request wrote")

    async def main(leave: threading.Event) -> None:
        writer = asyncio.create_task(db.call(write))
        await asyncio.sleep(0.05)  # waiting, in a worker thread, for the file lock
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
        leave.set()

    with turn_held_by_a_thread(db) as leave:
        asyncio.run(main(leave))
    # the abandoned wait got the turn once the holder left, and handed it straight back
    assert another_writer_gets_the_turn(db), "the cancelled request kept the write turn"


def count_give_backs(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """How often requests run inline give the write turn back to the other processes (and
    to the threads: the controller's loops write meanwhile, and are not counted)."""
    given: list[None] = []
    give_back = db._give_back

    def counted() -> None:
        if inline.suspendable():
            given.append(None)
        give_back()

    monkeypatch.setattr(db, "_give_back", counted)
    return given


async def queued_writers(db: Database, leave: threading.Event, count: int) -> list[str]:
    """``count`` requests of this loop queued for the turn a thread holds, then let in."""
    order: list[str] = []

    def write(name: str) -> None:
        with db.transaction():
            order.append(name)

    writers = [asyncio.create_task(db.call(write, f"w{i}")) for i in range(count)]
    await asyncio.sleep(0.05)  # all queued: the first waits in a thread for the file lock
    leave.set()
    await asyncio.wait_for(asyncio.gather(*writers), 10)
    return order


@sqlite_only
@pytest.mark.parametrize(("keep_seconds", "given_back"), [(60.0, 1), (0.0, 3)])
def test_a_loop_keeps_the_turn_for_its_next_queued_request_for_its_share(
    cloud, monkeypatch, keep_seconds, given_back
):
    """A request that ends its write while others of its loop wait hands them the turn
    directly: the file lock goes back to the other processes once, not once per request;
    past KEEP_TURN_SECONDS, between requests."""
    db = cloud.services.db
    monkeypatch.setattr("nubes.store.db.KEEP_TURN_SECONDS", keep_seconds)
    with turn_held_by_a_thread(db) as leave:
        given = count_give_backs(db, monkeypatch)
        order = asyncio.run(queued_writers(db, leave, 3))
    assert order == ["w0", "w1", "w2"]
    assert len(given) == given_back
    assert another_writer_gets_the_turn(db)


@sqlite_only
def test_a_kept_turn_runs_the_next_request_before_anything_else_on_the_loop(cloud, monkeypatch):
    """A pass of the loop would be time the turn is held with no one writing."""
    db = cloud.services.db
    monkeypatch.setattr("nubes.store.db.KEEP_TURN_SECONDS", 60.0)
    order: list[str] = []

    def write(name: str, pause: float) -> None:
        with db.transaction():
            order.append(name)
            if pause:
                inline.suspend(asyncio.sleep(pause))  # the second queues meanwhile
                asyncio.get_running_loop().call_soon(order.append, "the loop")

    async def main() -> None:
        first = asyncio.create_task(db.call(write, "first", 0.05))
        await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(first, db.call(write, "second", 0)), 10)

    asyncio.run(main())
    assert order == ["first", "second", "the loop"]
    assert another_writer_gets_the_turn(db)


@sqlite_only
def test_a_kept_turn_handed_to_a_request_just_cancelled_goes_on(cloud, monkeypatch):
    """The request a kept turn was handed to is cancelled before it runs: the turn goes to
    the next request of the loop, and back to the other processes after the last."""
    db = cloud.services.db
    monkeypatch.setattr("nubes.store.db.KEEP_TURN_SECONDS", 60.0)
    order: list[str] = []
    tasks: dict[str, asyncio.Task[None]] = {}

    def first() -> None:
        with db.transaction():
            order.append("first")
            inline.suspend(asyncio.sleep(0.05))  # the others queue meanwhile
        tasks["second"].cancel()  # handed the turn, not yet run

    def write(name: str) -> None:
        with db.transaction():
            order.append(name)

    async def main() -> None:
        tasks["first"] = asyncio.create_task(db.call(first))
        await asyncio.sleep(0.01)
        tasks["second"] = asyncio.create_task(db.call(write, "second"))
        tasks["third"] = asyncio.create_task(db.call(write, "third"))
        await asyncio.wait_for(asyncio.gather(tasks["first"], tasks["third"]), 10)
        with pytest.raises(asyncio.CancelledError):
            await tasks["second"]

    asyncio.run(main())
    assert order == ["first", "third"]
    assert another_writer_gets_the_turn(db), "the kept turn was lost with the cancelled request"

    # and with no one after it, the cancelled request gives the turn back itself
    order.clear()

    async def alone() -> None:
        tasks["first"] = asyncio.create_task(db.call(first))
        await asyncio.sleep(0.01)
        tasks["second"] = asyncio.create_task(db.call(write, "second"))
        await asyncio.wait_for(tasks["first"], 10)
        with pytest.raises(asyncio.CancelledError):
            await tasks["second"]

    asyncio.run(alone())
    assert order == ["first"]
    assert another_writer_gets_the_turn(db), "the kept turn was lost with the cancelled request"


@sqlite_only
def test_a_turn_that_comes_after_its_loop_closed_is_given_back(cloud):
    """The waiting thread hands the turn to the request's loop; a loop gone meanwhile (a
    worker shutting down) cannot take it, so the thread gives it back."""
    db = cloud.services.db
    loop = asyncio.new_event_loop()
    handed = loop.create_future()
    loop.close()
    db._wait_for_turn(loop, handed, None, threading.Event())
    assert another_writer_gets_the_turn(db), "the turn was kept for a closed loop"


@sqlite_only
def test_a_turn_that_comes_after_its_request_gave_up_is_given_back_by_the_thread(cloud):
    """A request cancelled while its thread waits for the turn: the loop may never run the
    hand-over (it ends right after, as a worker shutting down does), so the thread gives
    the turn back itself. In a clean clone's suite the loop once ended first."""
    db = cloud.services.db
    loop = asyncio.new_event_loop()
    try:
        handed = loop.create_future()
        abandoned = threading.Event()
        abandoned.set()
        db._wait_for_turn(loop, handed, None, abandoned)  # the loop never runs again
        assert another_writer_gets_the_turn(db), "the turn went to a loop that never ran"
    finally:
        loop.close()


sqlite_engine_only = pytest.mark.skipif(
    engine_name() != "sqlite", reason="checkpoints and BEGIN IMMEDIATE are SQLite's own"
)


@sqlite_engine_only
def test_a_begin_the_database_refuses_is_unavailable_not_a_crash(tmp_path, monkeypatch):
    """BEGIN goes to pysqlite directly; its failure (here: another program holds SQLite's
    lock past the busy timeout) is still the 503 every database error is."""
    monkeypatch.setattr("nubes.store.db.SQLITE_BUSY_TIMEOUT_MS", 50)
    db = Database(f"sqlite:///{tmp_path}/busy.db")
    other = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
    try:
        with db.transaction() as s:
            s.execute(text("CREATE TABLE t (a)"))
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(Unavailable, match="database is locked"), db.transaction() as s:
            s.execute(text("INSERT INTO t VALUES (1)"))
        other.execute("ROLLBACK")
        with db.transaction() as s:
            s.execute(text("INSERT INTO t VALUES (2)"))
    finally:
        other.close()
        db.dispose()


@sqlite_engine_only
def test_commits_leave_the_log_to_the_checkpointer(tmp_path):
    """A commit does not copy the write-ahead log into the database file (and fsync it)
    while it holds the write turn: the controller's loop does, with :meth:`checkpoint`."""
    db = Database(f"sqlite:///{tmp_path}/wal.db")
    main = tmp_path / "wal.db"
    try:
        with db.transaction() as s:
            s.execute(text("CREATE TABLE blobs (data BLOB)"))
        before = main.stat().st_size
        for _ in range(12):  # 12 x 512 KiB: 1,536 pages, past SQLite's default of 1,000
            with db.transaction() as s:
                s.execute(text("INSERT INTO blobs VALUES (zeroblob(524288))"))
        assert main.stat().st_size == before, "a commit checkpointed in the write turn"
        db.checkpoint()
        assert main.stat().st_size >= 12 * 524288
        with db.read() as s:
            assert s.execute(text("SELECT count(*) FROM blobs")).scalar() == 12
    finally:
        db.dispose()


def test_the_controller_loops_checkpoint_the_log(cloud, monkeypatch):
    checkpointed = threading.Event()
    monkeypatch.setattr(cloud.services.db, "checkpoint", checkpointed.set)

    async def main() -> None:
        loops = asyncio.create_task(_run_loops(cloud.services))
        try:
            for _ in range(100):
                if "wal-checkpoint" in cloud.services.loops:
                    break
                await asyncio.sleep(0.05)
        finally:
            loops.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loops

    asyncio.run(main())
    assert checkpointed.is_set()
    assert "wal-checkpoint" in cloud.services.loops


def another_writer_gets_the_turn(db: Database) -> bool:
    """Whether a thread gets the write turn within 5 s (the controller's own loops may hold
    it a moment). If not, the turn was leaked: it is given back so later tests can write."""
    done = threading.Event()

    def write() -> None:
        with db.transaction():
            done.set()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    if done.wait(5):
        return True
    db._give_back()
    thread.join(5)
    return False
