"""Quota limits and usage, charged in the caller's transaction.

``charge`` adds to each resource with one statement, ``INSERT ... ON CONFLICT DO UPDATE SET
in_use = in_use + n WHERE in_use + n <= limit``, in sorted order (no deadlocks between two
charges); a row that does not exist yet is made with ``n`` (checked against its limit first).
Both engines serialise writers on each usage row and evaluate the condition on its newest
version, so concurrent creates can never push usage over a limit. Since the resource row is
written in the same transaction, a failure anywhere rolls back both: usage always equals the
live resources. ``release`` gives back in one UPDATE on SQLite (one writer at a time), and one
per row, sorted, on PostgreSQL (its row locks, taken in one order everywhere).

The statements are built once, on the tables (plain Core), and kept: the instance hot path
charges and releases three resources per instance, and building SQL costs more than running
it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, case, func, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from nubes.domain.errors import InvalidInput, QuotaExceeded
from nubes.domain.quotas import PER_USER_RESOURCES, QUOTA_RESOURCES, UNLIMITED
from nubes.store.models import QuotaLimit, QuotaUsage
from nubes.store.query import table_of


def _check_resources(names: Mapping[str, int]) -> None:
    unknown = sorted(set(names) - set(QUOTA_RESOURCES))
    if unknown:
        raise InvalidInput(
            f"unknown quota resource(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(QUOTA_RESOURCES))}",
            code="nubes.quota.invalid_resource",
        )


_LIMIT_ROWS = table_of(QuotaLimit).c
_USAGE = table_of(QuotaUsage)
#: amounts and limits are bound as usage is counted (64 bits: RAM in MiB adds up)
_AMOUNT = _USAGE.c.in_use.type
_LIMITS = select(_LIMIT_ROWS.resource, _LIMIT_ROWS.hard_limit).where(
    _LIMIT_ROWS.project_id == bindparam("b_project")
)


def limits(session: Session, project_id: str, defaults: Mapping[str, int]) -> dict[str, int]:
    result = {name: defaults.get(name, default) for name, default in QUOTA_RESOURCES.items()}
    for resource, hard_limit in session.execute(_LIMITS, {"b_project": project_id}):
        result[resource] = hard_limit
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


#: dialect → the charging upsert
_CHARGES: dict[str, Any] = {}
#: resources → the releasing update
_RELEASES: dict[tuple[str, ...], Any] = {}


def _charge_statement(dialect: str) -> Any:
    """Upsert one usage row, adding ``b_amount`` only where the new total stays within
    ``b_limit`` (NULL: unlimited); returns a row when it wrote. One row per statement: a
    multi-row INSERT is compiled afresh on every execution, which costs more than the
    statements it saves."""
    stmt = _CHARGES.get(dialect)
    if stmt is None:
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        base = insert(_USAGE).values(
            project_id=bindparam("b_project"),
            user_id=bindparam("b_owner"),
            resource=bindparam("b_resource"),
            in_use=bindparam("b_amount", type_=_AMOUNT),
        )
        total = _USAGE.c.in_use + base.excluded.in_use
        stmt = base.on_conflict_do_update(
            index_elements=[_USAGE.c.project_id, _USAGE.c.user_id, _USAGE.c.resource],
            set_={"in_use": total},
            where=func.coalesce(total <= bindparam("b_limit", type_=_AMOUNT), true()),
        )
        # RETURNING says whether it wrote (an INSERT's rowcount is not reliable everywhere)
        stmt = stmt.returning(_USAGE.c.in_use)
        _CHARGES[dialect] = stmt
    return stmt


def _release_statement(resources: tuple[str, ...]) -> Any:
    stmt = _RELEASES.get(resources)
    if stmt is None:
        amount = case(
            {resource: bindparam(f"a{i}", type_=_AMOUNT) for i, resource in enumerate(resources)},
            value=_USAGE.c.resource,
        )
        stmt = (
            update(_USAGE)
            .where(
                _USAGE.c.project_id == bindparam("b_project"),
                _USAGE.c.user_id == bindparam("b_owner"),
                _USAGE.c.resource.in_(resources),
            )
            .values(in_use=_USAGE.c.in_use - amount)
        )
        _RELEASES[resources] = stmt
    return stmt


def _owner(resource: str, user_id: str | None) -> str:
    return (user_id or "") if resource in PER_USER_RESOURCES else ""


def _in_use(session: Session, project_id: str, owner: str, resource: str) -> int:
    stmt = select(QuotaUsage.in_use).where(
        QuotaUsage.project_id == project_id,
        QuotaUsage.user_id == owner,
        QuotaUsage.resource == resource,
    )
    return session.scalar(stmt) or 0


def _exceeded(resource: str, owner: str, in_use: int, limit: int, amount: int) -> QuotaExceeded:
    scope = "user" if owner else "project"
    return QuotaExceeded(
        f"quota exceeded for {resource}: this {scope} uses {in_use} of "
        f"{limit}, asked for {amount} more"
    )


def charge(
    session: Session,
    project_id: str,
    deltas: Mapping[str, int],
    defaults: Mapping[str, int],
    *,
    user_id: str | None = None,
) -> None:
    """Reserve ``deltas`` (all or nothing) or raise :class:`QuotaExceeded` naming the first
    resource, in sorted order, that does not fit."""
    _check_resources(deltas)
    limit = limits(session, project_id, defaults)
    wanted = sorted(r for r, amount in deltas.items() if amount > 0)
    stmt = _charge_statement(session.get_bind().dialect.name)
    for resource in wanted:
        owner, amount = _owner(resource, user_id), deltas[resource]
        bound = None if limit[resource] == UNLIMITED else limit[resource]
        # the upsert makes a missing row whatever its amount: one over the limit alone fails
        # here (usage is never negative, so it fails whether the row exists or not)
        fits = bound is None or amount <= bound
        if fits:
            params = {
                "b_project": project_id,
                "b_owner": owner,
                "b_resource": resource,
                "b_amount": amount,
                "b_limit": bound,
            }
            fits = session.execute(stmt, params).first() is not None
        if not fits:
            in_use = _in_use(session, project_id, owner, resource)
            raise _exceeded(resource, owner, in_use, limit[resource], amount)


def release(
    session: Session, project_id: str, deltas: Mapping[str, int], *, user_id: str | None = None
) -> None:
    """Give back what ``charge`` reserved, in the transaction that deletes the resource."""
    _check_resources(deltas)
    by_owner: dict[str, list[str]] = {}
    for resource in sorted(deltas):
        by_owner.setdefault(_owner(resource, user_id), []).append(resource)
    # PostgreSQL locks the rows an UPDATE matches in the order it finds them (heap order for a
    # scan, which every update reshuffles): one statement for three rows deadlocked against
    # charges and other releases taking them sorted. There, one row per statement, sorted, as
    # ``charge`` does. SQLite has one writer at a time: one statement.
    one_by_one = session.get_bind().dialect.name != "sqlite"
    for owner, resources in sorted(by_owner.items()):
        for group in [[r] for r in resources] if one_by_one else [resources]:
            params: dict[str, Any] = {"b_project": project_id, "b_owner": owner}
            params.update({f"a{i}": deltas[resource] for i, resource in enumerate(group)})
            session.execute(_release_statement(tuple(group)), params)
