"""The transactional outbox: ``record`` adds an event row to the caller's transaction, so the
event exists exactly when the change it describes does. Consumers read by increasing id.

An event is written at once with one prebuilt INSERT rather than through the session's unit of
work: every change on the instance hot path records one or more, and the ORM's flush
machinery cost more than the row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.store.models import Event, utcnow
from nubes.store.query import table_of

_INSERT = insert(table_of(Event))


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
    session.execute(
        _INSERT,
        {
            "kind": kind,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "project_id": project_id,
            "actor_id": ctx.user_id,
            "request_id": ctx.request_id,
            "payload": payload or {},
            "created_at": utcnow(),
        },
    )


def since(session: Session, after_id: int = 0, limit: int = 100) -> list[Event]:
    rows = session.scalars(select(Event).where(Event.id > after_id).order_by(Event.id).limit(limit))
    return list(rows)
