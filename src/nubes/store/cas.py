"""Compare-and-swap on a ``generation`` column (Placement's resource-provider generation), and
its general form: update a row only while some of its columns still hold what was read.

``compare_and_swap`` updates a row only if nobody changed it since it was read; the loser of a
race gets :class:`GenerationConflict` (409) and re-reads. ``update_if`` applies the same guard
to any columns (an instance's ``state``, say) and says whether the row matched.

The UPDATE for one model, one set of guarded columns and one set of written columns is built
once and kept (its values are bound at execution): building and cache-keying a statement costs
more than running it, and the scheduler and the instance lifecycle write through here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Update, bindparam, inspect, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ClauseElement

from nubes.domain.errors import GenerationConflict
from nubes.store.models import Base, utcnow
from nubes.store.query import table_of

#: (model, guarded columns, written columns) → its UPDATE; a handful per model, never evicted
_STATEMENTS: dict[tuple[type[Base], tuple[str, ...], tuple[str, ...]], Update] = {}


def _statement(model: type[Base], guarded: tuple[str, ...], written: tuple[str, ...]) -> Update:
    """On the table (see :func:`nubes.store.query.table_of`), naming the columns of the
    model's attributes (``Instance.instance_metadata`` is the column ``metadata``)."""
    key = (model, guarded, written)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        columns = inspect(model).columns
        stmt = (
            update(table_of(model))
            .where(columns["id"] == bindparam("key_"))
            .where(*(columns[attr] == bindparam(f"was_{attr}") for attr in guarded))
            .values({columns[attr]: bindparam(f"new_{attr}") for attr in written})
        )
        _STATEMENTS[key] = stmt
    return stmt


def update_if(
    session: Session,
    model: type[Base],
    primary_key: Any,
    expected: dict[str, Any],
    values: dict[str, Any],
) -> bool:
    """Apply ``values`` to the row whose columns still hold ``expected``; False when none does
    (it changed, or is gone). Keys are the model's column attributes; values are plain data
    (an SQL expression is not a parameter)."""
    params = {f"was_{column}": value for column, value in expected.items()}
    params.update({f"new_{column}": value for column, value in values.items()})
    params["key_"] = primary_key
    stmt = _statement(model, tuple(sorted(expected)), tuple(sorted(values)))
    result: Any = session.execute(stmt, params)
    return bool(result.rowcount == 1)


def compare_and_swap(
    session: Session,
    model: type[Base],
    primary_key: Any,
    expected_generation: int,
    values: dict[str, Any],
) -> int:
    """Apply ``values`` where the row still has ``expected_generation``; return the new one."""
    table: Any = model
    changes: dict[str, Any] = {**values, "generation": expected_generation + 1}
    if hasattr(model, "updated_at"):
        changes["updated_at"] = utcnow()
    plain = set(inspect(model).columns.keys()) >= changes.keys()
    if not plain or any(isinstance(value, ClauseElement) for value in changes.values()):
        # an SQL expression is part of the statement, not a parameter: build this one
        result: Any = session.execute(
            update(table)
            .where(table.id == primary_key, table.generation == expected_generation)
            .values(**changes)
            .execution_options(synchronize_session=False)
        )
        swapped = result.rowcount == 1
    else:
        expected = {"generation": expected_generation}
        swapped = update_if(session, model, primary_key, expected, changes)
    if not swapped:
        raise GenerationConflict(
            f"{model.__tablename__} {primary_key} changed since it was read "
            f"(expected generation {expected_generation}); read it again and retry"
        )
    return expected_generation + 1
