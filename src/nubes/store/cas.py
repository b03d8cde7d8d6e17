"""Compare-and-swap on a ``generation`` column (Placement's resource-provider generation).

``compare_and_swap`` updates a row only if nobody changed it since it was read; the loser of a
race gets :class:`GenerationConflict` (409) and re-reads.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from nubes.domain.errors import GenerationConflict
from nubes.store.models import Base, utcnow


def compare_and_swap(
    session: Session,
    model: type[Base],
    primary_key: Any,
    expected_generation: int,
    values: dict[str, Any],
) -> int:
    """Apply ``values`` where the row still has ``expected_generation``; return the new one."""
    table: Any = model
    extra: dict[str, Any] = {"generation": expected_generation + 1}
    if hasattr(model, "updated_at"):
        extra["updated_at"] = utcnow()
    result: Any = session.execute(
        update(table)
        .where(table.id == primary_key, table.generation == expected_generation)
        .values(**values, **extra)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise GenerationConflict(
            f"{model.__tablename__} {primary_key} changed since it was read "
            f"(expected generation {expected_generation}); read it again and retry"
        )
    return expected_generation + 1
