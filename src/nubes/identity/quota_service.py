"""Quota administration: show limits with usage, set limits, show defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nubes.domain.context import RequestContext
from nubes.domain.errors import NotFound
from nubes.identity import policy, quotas
from nubes.identity.core import IdentityCore
from nubes.identity.projects import find_project
from nubes.store import events


@dataclass(frozen=True)
class QuotaSet:
    project_id: str
    project_name: str
    limits: dict[str, int]
    in_use: dict[str, int]


class QuotaService:
    def __init__(self, core: IdentityCore) -> None:
        self.core = core

    def show(self, ctx: RequestContext, project: str) -> QuotaSet:
        with self.core.db.read() as session:
            row = find_project(session, project)
            if not ctx.is_cloud_admin and row.id != ctx.project_id:
                raise NotFound(f"no project {project!r}", code="nubes.project.not_found")
            policy.enforce(ctx, "identity:quota:show", project_id=row.id)
            return QuotaSet(
                row.id,
                row.name,
                quotas.limits(session, row.id, self.core.settings.default_quotas),
                quotas.usage(session, row.id),
            )

    def update(self, ctx: RequestContext, project: str, new_limits: Mapping[str, int]) -> QuotaSet:
        policy.enforce(ctx, "identity:quota:update")
        with self.core.db.transaction() as session:
            row = find_project(session, project)
            quotas.set_limits(session, row.id, new_limits)
            events.record(
                session,
                ctx,
                "quota.updated",
                "project",
                row.id,
                project_id=row.id,
                payload=dict(new_limits),
            )
        return self.show(ctx, row.id)

    def defaults(self, ctx: RequestContext) -> dict[str, int]:
        policy.enforce(ctx, "identity:role:list")
        return dict(self.core.settings.default_quotas)
