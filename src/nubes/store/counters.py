"""Monotonic named counters, safe under concurrency: the UPDATE takes the row lock, so two
transactions never read the same value."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from nubes.store.models import Counter


def next_value(session: Session, name: str) -> int:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(Counter).values(name=name, value=0).on_conflict_do_nothing())
    session.execute(
        update(Counter)
        .where(Counter.name == name)
        .values(value=Counter.value + 1)
        .execution_options(synchronize_session=False)
    )
    return int(session.scalar(select(Counter.value).where(Counter.name == name)) or 0)
