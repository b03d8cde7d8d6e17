"""The transactional outbox: ``record`` adds an event row to the caller's transaction, so the
event exists exactly when the change it describes does. Consumers read by increasing id.

An event is written at once with one prebuilt INSERT rather than through the session's unit of
work: every change on the instance hot path records one or more, and the ORM's flush
machinery cost more than the row. Within :func:`batch`, events wait and go in together with
one statement when it ends (an agent's report moves an instance through several states)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.store.models import Event, utcnow
from nubes.store.query import table_of

_INSERT = insert(table_of(Event))
_BATCH = "nubes.events.batch"


def record(
    session: Session,
    ctx: RequestContext,
    kind: str,
    resource_type: str,
    resource_id: str,
    *,
    project_id: str | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    row = {
        "kind": kind,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "project_id": project_id,
        "actor_id": ctx.user_id,
        "request_id": ctx.request_id,
        "payload": payload or {},
        "created_at": utcnow(),
    }
    waiting = session.info.get(_BATCH)
    if waiting is None:
        session.execute(_INSERT, row)
    else:
        waiting.append(row)


@contextmanager
def batch(session: Session) -> Iterator[None]:
    """Events recorded inside go in, in order, with one statement at the end; none if the
    block fails (its transaction is rolled back). Nothing inside may read events back."""
    if _BATCH in session.info:  # already batching: the outer batch writes them
        yield
        return
    waiting: list[dict[str, Any]] = []
    session.info[_BATCH] = waiting
    try:
        yield
    finally:
        del session.info[_BATCH]
    if waiting:
        session.execute(_INSERT, waiting)


def since(session: Session, after_id: int = 0, limit: int = 100) -> list[Event]:
    rows = session.scalars(select(Event).where(Event.id > after_id).order_by(Event.id).limit(limit))
    return list(rows)
