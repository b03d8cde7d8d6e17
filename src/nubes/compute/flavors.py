"""Flavors: sizes of instances. Private flavors are visible only to projects given access
(and to cloud admins); to everyone else they do not exist (404)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, exists, or_, select
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.domain.errors import AlreadyExists, Conflict, NotFound
from nubes.identity import policy
from nubes.identity.core import IdentityCore
from nubes.identity.projects import find_project
from nubes.store import events
from nubes.store.cas import compare_and_swap
from nubes.store.models import Flavor, FlavorAccess
from nubes.store.query import paginate, taken

#: The five sizes of the OpenStack seed: (id, name, vcpus, ram MB, disk GB, ephemeral GB).
DEFAULT_FLAVORS = (
    ("1", "m1.tiny", 1, 512, 1, 0),
    ("2", "m1.small", 1, 1024, 20, 40),
    ("3", "m1.medium", 2, 2048, 40, 40),
    ("4", "m1.large", 4, 8192, 40, 40),
    ("5", "m1.xlarge", 8, 16384, 80, 40),
)


def seed_default_flavors(session: Session) -> int:
    """Add the default flavors that are missing; returns how many were added."""
    added = 0
    for flavor_id, name, vcpus, ram, disk, ephemeral in DEFAULT_FLAVORS:
        taken = session.scalar(
            select(exists().where(or_(Flavor.id == flavor_id, Flavor.name == name)))
        )
        if not taken:
            session.add(
                Flavor(
                    id=flavor_id,
                    name=name,
                    vcpus=vcpus,
                    ram_mb=ram,
                    disk_gb=disk,
                    ephemeral_gb=ephemeral,
                )
            )
            added += 1
    return added


#: visible to a project that is not the cloud admin's: public, or shared with the project
_VISIBLE = or_(
    Flavor.is_public,
    exists().where(
        FlavorAccess.flavor_id == Flavor.id,
        FlavorAccess.project_id == bindparam("project_id"),
    ),
)


def _visible_clause(ctx: RequestContext) -> Any:
    """:data:`_VISIBLE` with the project filled in, for statements built per request (a
    bound ``project_id`` does not survive pagination's rewriting)."""
    if ctx.is_cloud_admin:
        return True
    return or_(
        Flavor.is_public,
        exists().where(
            FlavorAccess.flavor_id == Flavor.id, FlavorAccess.project_id == ctx.project_id
        ),
    )


#: a flavor by id, else by name (names are unique), built once: every create looks one up
_FLAVOR_ANY = (
    select(Flavor)
    .where(or_(Flavor.id == bindparam("ref"), Flavor.name == bindparam("ref")))
    .order_by((Flavor.id == bindparam("ref")).desc())
    .limit(1)
)
_FLAVOR_VISIBLE = _FLAVOR_ANY.where(_VISIBLE)


def find_flavor(session: Session, ctx: RequestContext, ref: str) -> Flavor:
    """By id or name, among the flavors ``ctx`` can see; 404 otherwise."""
    stmt = _FLAVOR_ANY if ctx.is_cloud_admin else _FLAVOR_VISIBLE
    row = session.scalar(stmt, {"ref": ref, "project_id": ctx.project_id})
    if row is None:
        raise NotFound(f"no flavor {ref!r}", code="nubes.flavor.not_found")
    return row


class FlavorService:
    def __init__(self, core: IdentityCore) -> None:
        self.core = core

    def _find(self, session: Session, ctx: RequestContext, ref: str) -> Flavor:
        return find_flavor(session, ctx, ref)

    def create(
        self,
        ctx: RequestContext,
        *,
        name: str,
        vcpus: int,
        ram_mb: int,
        disk_gb: int,
        ephemeral_gb: int = 0,
        swap_mb: int = 0,
        is_public: bool = True,
        description: str = "",
        extra_specs: dict[str, str] | None = None,
        flavor_id: str | None = None,
        projects: list[str] | None = None,
    ) -> Flavor:
        policy.enforce(ctx, "compute:flavor:create")
        with self.core.db.transaction() as session:
            clash = Flavor.name == name
            if flavor_id:
                clash = or_(clash, Flavor.id == flavor_id)
            if session.scalar(select(exists().where(clash))):
                also = f" or with id {flavor_id!r}" if flavor_id else ""
                raise AlreadyExists(
                    f"a flavor named {name!r}{also} exists",
                    code="nubes.flavor.exists",
                )
            row = Flavor(
                name=name,
                vcpus=vcpus,
                ram_mb=ram_mb,
                disk_gb=disk_gb,
                ephemeral_gb=ephemeral_gb,
                swap_mb=swap_mb,
                is_public=is_public,
                description=description,
                extra_specs=extra_specs or {},
            )
            if flavor_id:
                row.id = flavor_id
            session.add(row)
            session.flush()
            for project in projects or []:
                self._grant(session, row, project)
            events.record(session, ctx, "flavor.created", "flavor", row.id)
            return row

    def list_flavors(
        self,
        ctx: RequestContext,
        *,
        name: str | None = None,
        is_public: bool | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[Flavor]:
        policy.enforce(ctx, "compute:flavor:list")
        stmt = select(Flavor).where(_visible_clause(ctx))
        if name is not None:
            stmt = stmt.where(Flavor.name == name)
        if is_public is not None:
            stmt = stmt.where(Flavor.is_public == is_public)
        with self.core.db.read() as session:
            return paginate(
                session, stmt, Flavor, limit=limit, marker=marker, sort_column=Flavor.ram_mb
            )

    def get(self, ctx: RequestContext, ref: str) -> Flavor:
        policy.enforce(ctx, "compute:flavor:show")
        with self.core.db.read() as session:
            return self._find(session, ctx, ref)

    def update(self, ctx: RequestContext, ref: str, changes: dict[str, Any]) -> Flavor:
        """Only descriptive fields and extra specs change: sizes of a flavor in use are fixed
        (as in Nova); make a new flavor instead."""
        with self.core.db.transaction() as session:
            row = self._find(session, ctx, ref)
            policy.enforce(ctx, "compute:flavor:update")
            values = dict(changes)
            if "extra_specs" in values:
                merged = {**row.extra_specs, **values["extra_specs"]}
                values["extra_specs"] = {k: v for k, v in merged.items() if v is not None}
            new_name = values.get("name")
            if new_name and new_name != row.name and taken(session, Flavor.name, new_name):
                raise AlreadyExists(f"flavor {new_name!r} exists", code="nubes.flavor.exists")
            compare_and_swap(session, Flavor, row.id, row.generation, values)
            session.refresh(row)
            events.record(
                session,
                ctx,
                "flavor.updated",
                "flavor",
                row.id,
                payload={"changed": sorted(values)},
            )
            return row

    def delete(self, ctx: RequestContext, ref: str) -> None:
        with self.core.db.transaction() as session:
            row = self._find(session, ctx, ref)
            policy.enforce(ctx, "compute:flavor:delete")
            session.delete(row)
            events.record(session, ctx, "flavor.deleted", "flavor", row.id)

    # project access -------------------------------------------------------------------------

    def _grant(self, session: Session, row: Flavor, project: str) -> str:
        if row.is_public:
            raise Conflict(
                f"flavor {row.name!r} is public; access lists apply to private flavors",
                code="nubes.flavor.access_public",
            )
        pid = find_project(session, project).id
        if session.get(FlavorAccess, (row.id, pid)) is None:
            session.add(FlavorAccess(flavor_id=row.id, project_id=pid))
        return pid

    def add_access(self, ctx: RequestContext, ref: str, project: str) -> list[str]:
        policy.enforce(ctx, "compute:flavor:access")
        with self.core.db.transaction() as session:
            row = self._find(session, ctx, ref)
            pid = self._grant(session, row, project)
            events.record(session, ctx, "flavor.access_added", "flavor", row.id, project_id=pid)
        return self.access(ctx, ref)

    def remove_access(self, ctx: RequestContext, ref: str, project: str) -> list[str]:
        policy.enforce(ctx, "compute:flavor:access")
        with self.core.db.transaction() as session:
            row = self._find(session, ctx, ref)
            pid = find_project(session, project).id
            grant = session.get(FlavorAccess, (row.id, pid))
            if grant is None:
                raise NotFound(
                    f"project {project!r} has no access to flavor {row.name!r}",
                    code="nubes.flavor.not_found",
                )
            session.delete(grant)
            events.record(session, ctx, "flavor.access_removed", "flavor", row.id, project_id=pid)
        return self.access(ctx, ref)

    def access(self, ctx: RequestContext, ref: str) -> list[str]:
        policy.enforce(ctx, "compute:flavor:access")
        with self.core.db.read() as session:
            row = self._find(session, ctx, ref)
            return list(
                session.scalars(
                    select(FlavorAccess.project_id).where(FlavorAccess.flavor_id == row.id)
                )
            )
