"""Small builders used by the functional tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine

from tests.conftest import Cloud, engine_name

PASSWORD = "correct-horse-1"

#: tests of the order writers lock rows in (see :func:`waiting_behind`)
postgresql_row_locks = pytest.mark.skipif(
    engine_name() != "postgresql",
    reason="row-lock order is PostgreSQL's: SQLite has one writer at a time, no row locks",
)


def make_project(cloud: Cloud, admin: dict[str, str], name: str) -> dict[str, Any]:
    r = cloud.client.post("/v1/projects", json={"name": name}, headers=admin)
    assert r.status_code == 201, r.text
    return dict(r.json())


def make_user(
    cloud: Cloud, admin: dict[str, str], name: str, project: str, role: str = "member"
) -> dict[str, str]:
    """Create a user with ``role`` on ``project``; return its auth headers."""
    r = cloud.client.post(
        "/v1/users",
        json={"name": name, "password": PASSWORD, "project": project, "role": role},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    return cloud.as_(cloud.token(name, PASSWORD, project))


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "request_id"} <= set(body["error"]), body
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return dict(body["error"])


@contextmanager
def statements_of_this_thread(engine: Engine, prefix: str = "") -> Iterator[list[str]]:
    """The SQL statements (starting with ``prefix``) this thread runs on ``engine`` while
    inside. Only this thread's: the controller's loops (heartbeat writer, host monitor, task
    deadlines) run in the test client's threads and query whenever they are due."""
    statements: list[str] = []
    me = threading.get_ident()

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == me and statement.lstrip().upper().startswith(prefix):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


@contextmanager
def waiting_behind(
    engine: Engine, hold: str, params: dict[str, Any], writer: Callable[[], object]
) -> Iterator[Connection]:
    """PostgreSQL: lock a row with ``hold`` (an UPDATE), run ``writer`` in a thread until it
    waits for that row, and yield another connection to probe which rows the writer holds
    meanwhile (``SELECT … FOR UPDATE NOWAIT`` fails on those). Then release and join."""
    holder, probe = engine.connect(), engine.connect()
    thread = threading.Thread(target=writer)
    try:
        holder.execute(text(hold), params)
        thread.start()
        deadline = time.monotonic() + 10
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        while True:
            blocked = probe.execute(waiting).scalar()
            probe.rollback()  # the statistics are a snapshot per transaction
            if blocked:
                break
            assert time.monotonic() < deadline, "the writer never waited for the held row"
            time.sleep(0.02)
        yield probe
        probe.rollback()
    finally:
        holder.rollback()
        holder.close()
        probe.close()
        if thread.is_alive():
            thread.join(10)
