"""Quota limits and usage, charged in the caller's transaction.

``charge`` runs ``UPDATE quota_usages SET in_use = in_use + n WHERE ... AND in_use + n <= limit``
for each resource, in sorted order (no deadlocks between two charges). Both engines serialise
writers on that row, and the condition is re-checked on the newest row version, so concurrent
creates can never push usage over a limit. Since the resource row is written in the same
transaction, a failure anywhere rolls back both: usage always equals the live resources.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from nubes.domain.errors import InvalidInput, QuotaExceeded
from nubes.domain.quotas import PER_USER_RESOURCES, QUOTA_RESOURCES, UNLIMITED
from nubes.store.models import QuotaLimit, QuotaUsage


def _check_resources(names: Mapping[str, int]) -> None:
    unknown = sorted(set(names) - set(QUOTA_RESOURCES))
    if unknown:
        raise InvalidInput(
            f"unknown quota resource(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(QUOTA_RESOURCES))}",
            code="nubes.quota.invalid_resource",
        )


def limits(session: Session, project_id: str, defaults: Mapping[str, int]) -> dict[str, int]:
    result = {name: defaults.get(name, default) for name, default in QUOTA_RESOURCES.items()}
    for row in session.scalars(select(QuotaLimit).where(QuotaLimit.project_id == project_id)):
        result[row.resource] = row.hard_limit
    return result


def set_limits(session: Session, project_id: str, new_limits: Mapping[str, int]) -> None:
    _check_resources(new_limits)
    for resource, value in new_limits.items():
        if value < UNLIMITED:
            raise InvalidInput(f"{resource}: a limit is -1 (unlimited) or a number ≥ 0")
        row = session.get(QuotaLimit, (project_id, resource))
        if row is None:
            session.add(QuotaLimit(project_id=project_id, resource=resource, hard_limit=value))
        else:
            row.hard_limit = value


def usage(session: Session, project_id: str) -> dict[str, int]:
    """In use per resource; per-user resources are summed over the project's users."""
    result = dict.fromkeys(QUOTA_RESOURCES, 0)
    for row in session.scalars(select(QuotaUsage).where(QuotaUsage.project_id == project_id)):
        result[row.resource] += row.in_use
    return result


def _ensure_row(session: Session, project_id: str, user_id: str, resource: str) -> None:
    values = {"project_id": project_id, "user_id": user_id, "resource": resource, "in_use": 0}
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(QuotaUsage).values(**values).on_conflict_do_nothing())


def charge(
    session: Session,
    project_id: str,
    deltas: Mapping[str, int],
    defaults: Mapping[str, int],
    *,
    user_id: str | None = None,
) -> None:
    """Reserve ``deltas`` (all or nothing) or raise :class:`QuotaExceeded`."""
    _check_resources(deltas)
    limit = limits(session, project_id, defaults)
    for resource in sorted(deltas):
        amount = deltas[resource]
        if amount <= 0:
            continue
        owner = (user_id or "") if resource in PER_USER_RESOURCES else ""
        _ensure_row(session, project_id, owner, resource)
        key = (
            (QuotaUsage.project_id == project_id)
            & (QuotaUsage.user_id == owner)
            & (QuotaUsage.resource == resource)
        )
        stmt = update(QuotaUsage).where(key).values(in_use=QuotaUsage.in_use + amount)
        if limit[resource] != UNLIMITED:
            stmt = stmt.where(QuotaUsage.in_use + amount <= limit[resource])
        result = session.execute(stmt.execution_options(synchronize_session=False))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            in_use = session.scalar(select(QuotaUsage.in_use).where(key)) or 0
            scope = "user" if owner else "project"
            raise QuotaExceeded(
                f"quota exceeded for {resource}: this {scope} uses {in_use} of "
                f"{limit[resource]}, asked for {amount} more"
            )


def release(
    session: Session, project_id: str, deltas: Mapping[str, int], *, user_id: str | None = None
) -> None:
    """Give back what ``charge`` reserved, in the transaction that deletes the resource."""
    _check_resources(deltas)
    for resource in sorted(deltas):
        owner = (user_id or "") if resource in PER_USER_RESOURCES else ""
        session.execute(
            update(QuotaUsage)
            .where(
                (QuotaUsage.project_id == project_id)
                & (QuotaUsage.user_id == owner)
                & (QuotaUsage.resource == resource)
            )
            .values(in_use=QuotaUsage.in_use - deltas[resource])
            .execution_options(synchronize_session=False)
        )
