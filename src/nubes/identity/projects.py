"""Projects: the unit of ownership and quota."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.domain.errors import AlreadyExists, Conflict, NotFound
from nubes.identity import policy
from nubes.identity.core import IdentityCore
from nubes.identity.revocation import revoke_project_tokens
from nubes.store import events
from nubes.store.cas import compare_and_swap
from nubes.store.models import Base, Instance, Keypair, Project, RoleAssignment
from nubes.store.query import paginate, taken


def find_project(session: Session, ref: str) -> Project:
    """By id or by name; 404 when neither matches."""
    row = session.get(Project, ref) or session.scalar(select(Project).where(Project.name == ref))
    if row is None:
        raise NotFound(f"no project {ref!r}", code="nubes.project.not_found")
    return row


class ProjectService:
    def __init__(self, core: IdentityCore) -> None:
        self.core = core

    def _visible(self, session: Session, ctx: RequestContext, ref: str) -> Project:
        row = find_project(session, ref)
        if not ctx.is_cloud_admin and row.id != ctx.project_id:
            raise NotFound(f"no project {ref!r}", code="nubes.project.not_found")
        return row

    def create(
        self, ctx: RequestContext, name: str, description: str = "", enabled: bool = True
    ) -> Project:
        policy.enforce(ctx, "identity:project:create")
        with self.core.db.transaction() as session:
            if session.scalar(select(exists().where(Project.name == name))):
                raise AlreadyExists(f"project {name!r} exists", code="nubes.project.exists")
            row = Project(name=name, description=description, enabled=enabled)
            session.add(row)
            try:
                session.flush()
            except IntegrityError as exc:
                raise AlreadyExists(
                    f"project {name!r} exists", code="nubes.project.exists"
                ) from exc
            events.record(session, ctx, "project.created", "project", row.id, project_id=row.id)
            return row

    def list_projects(
        self,
        ctx: RequestContext,
        *,
        name: str | None = None,
        enabled: bool | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[Project]:
        policy.enforce(ctx, "identity:project:list")
        stmt = select(Project)
        if not ctx.is_cloud_admin:
            stmt = stmt.where(Project.id == ctx.project_id)
        if name is not None:
            stmt = stmt.where(Project.name == name)
        if enabled is not None:
            stmt = stmt.where(Project.enabled == enabled)
        with self.core.db.read() as session:
            return paginate(
                session, stmt, Project, limit=limit, marker=marker, sort_column=Project.name
            )

    def get(self, ctx: RequestContext, ref: str) -> Project:
        with self.core.db.read() as session:
            row = self._visible(session, ctx, ref)
            policy.enforce(ctx, "identity:project:show", project_id=row.id)
            return row

    def update(self, ctx: RequestContext, ref: str, changes: dict[str, Any]) -> Project:
        with self.core.db.transaction() as session:
            row = self._visible(session, ctx, ref)
            policy.enforce(ctx, "identity:project:update", project_id=row.id)
            if row.is_admin_project and changes.get("enabled") is False:
                raise Conflict("the admin project cannot be disabled", code="nubes.project.in_use")
            new_name = changes.get("name")
            if new_name and new_name != row.name and taken(session, Project.name, new_name):
                raise AlreadyExists(f"project {new_name!r} exists", code="nubes.project.exists")
            compare_and_swap(session, Project, row.id, row.generation, changes)
            if changes.get("enabled") is False:
                revoke_project_tokens(session, self.core.settings, row.id)
            session.refresh(row)
            events.record(
                session,
                ctx,
                "project.updated",
                "project",
                row.id,
                project_id=row.id,
                payload={"changed": sorted(changes)},
            )
            return row

    def delete(self, ctx: RequestContext, ref: str) -> None:
        with self.core.db.transaction() as session:
            row = self._visible(session, ctx, ref)
            policy.enforce(ctx, "identity:project:delete", project_id=row.id)
            if row.is_admin_project:
                raise Conflict("the admin project cannot be deleted", code="nubes.project.in_use")
            if session.scalar(select(exists().where(Keypair.project_id == row.id))):
                raise Conflict(
                    f"project {row.name!r} still owns keypairs; delete them first",
                    code="nubes.project.in_use",
                )
            owned = _still_owned(session, row.id)
            if owned:
                raise Conflict(
                    f"project {row.name!r} still owns {', '.join(owned)}; delete them first",
                    code="nubes.project.in_use",
                )
            # deleted instances are kept as records until their project goes; so is the
            # default security group nubes made for it (it cannot be deleted on its own)
            session.execute(
                delete(Instance).where(Instance.project_id == row.id, Instance.state == "deleted")
            )
            _delete_default_security_group(session, row.id)
            revoke_project_tokens(session, self.core.settings, row.id)
            session.execute(delete(RoleAssignment).where(RoleAssignment.project_id == row.id))
            session.delete(row)
            events.record(session, ctx, "project.deleted", "project", row.id, project_id=row.id)


def _still_owned(session: Session, project_id: str) -> list[str]:
    """What keeps a project from going: rows of every table whose reference to the project
    does not cascade (instances, images, networks, server groups, …), read from the schema
    itself so a new resource is never forgotten. Deleted instances do not count."""
    found = []
    for table in Base.metadata.sorted_tables:
        for key in table.foreign_keys:
            if key.column.table.name != "projects" or (key.ondelete or "").upper() in (
                "CASCADE",
                "SET NULL",
            ):
                continue
            stmt = select(func.count()).select_from(table).where(key.parent == project_id)
            if table.name == "instances":
                stmt = stmt.where(table.c.state != "deleted")
            count = session.scalar(stmt)
            if count:
                found.append(f"{count} {table.name.replace('_', ' ')}")
    for name in LOOSELY_OWNED:
        table = Base.metadata.tables[name]
        stmt = select(func.count()).select_from(table).where(table.c.project_id == project_id)
        if name == "security_groups":
            stmt = stmt.where(table.c.name != DEFAULT_SECURITY_GROUP)
        count = session.scalar(stmt)
        if count:
            found.append(f"{count} {name.replace('_', ' ')}")
    return found


#: resources that name their project without a foreign key (as Neutron's do), counted too
LOOSELY_OWNED = ("networks", "ports", "routers", "floating_ips", "security_groups")
DEFAULT_SECURITY_GROUP = "default"


def _delete_default_security_group(session: Session, project_id: str) -> None:
    rules = Base.metadata.tables["security_group_rules"]
    groups = Base.metadata.tables["security_groups"]
    session.execute(delete(rules).where(rules.c.project_id == project_id))
    session.execute(delete(groups).where(groups.c.project_id == project_id))
