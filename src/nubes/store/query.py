"""List helpers shared by every service: marker pagination and not-found lookups; and
:func:`table_of`, for the hot paths' prebuilt statements."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, Table, delete, exists, select, tuple_
from sqlalchemy.orm import Session

from nubes.domain.errors import InvalidInput

T = TypeVar("T")

MAX_LIMIT = 1000


def table_of(model: Any) -> Table:
    """A model's table. A statement on the table rather than the entity runs through a
    session as plain Core: still seen by ``Database.watch``, without the ORM's statement
    handling (about half the cost of a small statement) or an autoflush. For statements that
    read or write columns, not entities."""
    table: Table = model.metadata.tables[model.__tablename__]
    return table


def paginate(
    session: Session,
    stmt: Select[Any],
    model: type[T],
    *,
    limit: int | None,
    marker: str | None,
    sort_column: Any,
    key_column: Any | None = None,
) -> list[T]:
    """Rows after ``marker`` (the key of the last row the client saw), ordered by
    (sort_column, key); at most ``limit``. An unknown marker is a 400, as in Nova."""
    key = key_column if key_column is not None else model.id  # type: ignore[attr-defined]
    if marker is not None:
        anchor = session.execute(select(sort_column, key).where(key == marker)).first()
        if anchor is None:
            raise InvalidInput(f"marker: no item {marker!r} in this list")
        stmt = stmt.where(tuple_(sort_column, key) > tuple_(anchor[0], anchor[1]))
    stmt = stmt.order_by(sort_column, key).limit(min(limit or MAX_LIMIT, MAX_LIMIT))
    return list(session.scalars(stmt))


def taken(session: Session, column: Any, value: object) -> bool:
    """Whether a row already has ``column == value`` (a friendly check before the unique
    constraint, which stays the real guard)."""
    return bool(session.scalar(select(exists().where(column == value))))


def delete_row(session: Session, model: Any, primary_key: object) -> bool:
    """Delete one row by id; False when a concurrent transaction deleted it first.

    Under READ COMMITTED two transactions can both read a row and both "delete" it; only one
    removes it. Anything given back on delete (quota) must be undone when this is False, which
    the caller does by raising, so the transaction rolls back."""
    result: Any = session.execute(
        delete(model).where(model.id == primary_key).execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)
