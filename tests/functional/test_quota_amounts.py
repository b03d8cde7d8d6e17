"""Quota amounts are 64-bit, as usage is stored: RAM in MiB adds up past 2^31 in a large cloud
(PostgreSQL refuses an oversized 32-bit parameter: "integer out of range")."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from nubes.identity import quotas
from nubes.store.models import QuotaUsage
from tests.functional.helpers import make_project


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
