"""Quota amounts are 64-bit, as usage is stored: RAM in MiB adds up past 2^31 in a large cloud
(PostgreSQL refuses an oversized 32-bit parameter: "integer out of range")."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text

from nubes.identity import quotas
from nubes.store.models import QuotaUsage
from tests.functional.helpers import make_project, postgresql_row_locks, waiting_behind


def test_a_charge_and_release_beyond_32_bits(cloud: Any) -> None:
    project = make_project(cloud, cloud.admin, "big")["id"]
    db, defaults = cloud.services.db, {"ram": -1, "cores": -1}
    with db.transaction() as session:
        quotas.charge(session, project, {"ram": 1 << 40, "cores": 1}, defaults)
    with db.read() as session:
        used = {u.resource: u.in_use for u in session.scalars(select(QuotaUsage))}
    assert used["ram"] == 1 << 40
    with db.transaction() as session:
        quotas.release(session, project, {"ram": 1 << 40, "cores": 1})
    with db.read() as session:
        used = {u.resource: u.in_use for u in session.scalars(select(QuotaUsage))}
    assert used["ram"] == 0


@postgresql_row_locks
def test_a_release_locks_usage_rows_in_sorted_order(cloud: Any) -> None:
    """A release took its three usage rows with one UPDATE, in the order PostgreSQL found them
    (heap order, reshuffled by every update) while charges take them sorted: concurrent
    creates and deletes of one project deadlocked (the storm bench on PostgreSQL: 831
    "deadlock detected", 9 % of its boots failed). A release now waits for the first row
    in sorted order holding none of the others."""
    project = make_project(cloud, cloud.admin, "locks")["id"]
    db, amounts = cloud.services.db, {"cores": 1, "instances": 1, "ram": 64}
    with db.transaction() as session:
        quotas.charge(session, project, amounts, {"cores": -1, "instances": -1, "ram": -1})
    where = "WHERE project_id = :p AND user_id = ''"
    for _ in range(2):  # a new version of the "cores" row, after the others in the heap
        with db.engine.begin() as conn:
            conn.execute(
                text(f"UPDATE quota_usages SET in_use = in_use {where} AND resource = 'cores'"),
                {"p": project},
            )
    with db.engine.connect() as conn:
        heap = (
            conn.execute(
                text(f"SELECT resource FROM quota_usages {where} ORDER BY ctid"), {"p": project}
            )
            .scalars()
            .all()
        )
    assert heap[-1] == "cores", heap  # else a scan would find the rows sorted anyway

    def release() -> None:
        with db.transaction() as session:
            # a scan, as the planner chose under load: rows in heap order
            session.execute(text("SET LOCAL enable_indexscan = off"))
            session.execute(text("SET LOCAL enable_bitmapscan = off"))
            quotas.release(session, project, amounts)

    hold = f"UPDATE quota_usages SET in_use = in_use {where} AND resource = 'cores'"
    with waiting_behind(db.engine, hold, {"p": project}, release) as probe:
        # the release waits on "cores", the first row in sorted order: it holds no other row
        probe.execute(
            text(f"SELECT 1 FROM quota_usages {where} AND resource = 'ram' FOR UPDATE NOWAIT"),
            {"p": project},
        )
    with db.read() as session:
        used = {
            u.resource: u.in_use
            for u in session.scalars(select(QuotaUsage).where(QuotaUsage.project_id == project))
        }
    assert used == {"cores": 0, "instances": 0, "ram": 0}
