"""Users and their role assignments on projects."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.domain.errors import AlreadyExists, Conflict, InvalidInput, NotAuthenticated, NotFound
from nubes.domain.roles import Role
from nubes.identity import policy
from nubes.identity.core import IdentityCore
from nubes.identity.projects import find_project
from nubes.identity.revocation import revoke_user_tokens
from nubes.store import events
from nubes.store.cas import compare_and_swap
from nubes.store.models import Keypair, Project, RoleAssignment, User, utcnow
from nubes.store.query import paginate, taken

MIN_PASSWORD = 8


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password: at least {MIN_PASSWORD} characters")


def find_user(session: Session, ref: str) -> User:
    row = session.get(User, ref) or session.scalar(select(User).where(User.name == ref))
    if row is None:
        raise NotFound(f"no user {ref!r}", code="nubes.user.not_found")
    return row


def _cloud_admin_count(session: Session, excluding_user: str | None = None) -> int:
    stmt = (
        select(func.count(func.distinct(RoleAssignment.user_id)))
        .join(Project, Project.id == RoleAssignment.project_id)
        .join(User, User.id == RoleAssignment.user_id)
        .where(Project.is_admin_project, RoleAssignment.role == Role.admin.name, User.enabled)
    )
    if excluding_user:
        stmt = stmt.where(RoleAssignment.user_id != excluding_user)
    return session.scalar(stmt) or 0


class UserService:
    def __init__(self, core: IdentityCore) -> None:
        self.core = core

    def _visible(self, session: Session, ctx: RequestContext, ref: str) -> User:
        row = find_user(session, ref)
        if not ctx.is_cloud_admin and row.id != ctx.user_id:
            raise NotFound(f"no user {ref!r}", code="nubes.user.not_found")
        return row

    def create(
        self,
        ctx: RequestContext,
        name: str,
        password: str,
        *,
        email: str = "",
        enabled: bool = True,
        project: str | None = None,
        role: str | None = None,
    ) -> User:
        """Create a user; with ``project`` it becomes the default project and the user gets
        ``role`` (member unless said otherwise) on it, in the same transaction."""
        policy.enforce(ctx, "identity:user:create")
        check_password_strength(password)
        granted = Role.parse(role) if role else Role.member
        password_hash = self.core.hasher.hash(password)
        with self.core.db.transaction() as session:
            if session.scalar(select(exists().where(User.name == name))):
                raise AlreadyExists(f"user {name!r} exists", code="nubes.user.exists")
            target = find_project(session, project) if project else None
            row = User(
                name=name,
                password_hash=password_hash,
                email=email,
                enabled=enabled,
                default_project_id=target.id if target else None,
            )
            session.add(row)
            session.flush()
            if target is not None:
                session.add(RoleAssignment(user_id=row.id, project_id=target.id, role=granted.name))
            events.record(session, ctx, "user.created", "user", row.id)
            return row

    def list_users(
        self,
        ctx: RequestContext,
        *,
        name: str | None = None,
        enabled: bool | None = None,
        project: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[User]:
        policy.enforce(ctx, "identity:user:list")
        stmt = select(User)
        if name is not None:
            stmt = stmt.where(User.name == name)
        if enabled is not None:
            stmt = stmt.where(User.enabled == enabled)
        with self.core.db.read() as session:
            if project is not None:
                pid = find_project(session, project).id
                stmt = stmt.where(
                    exists().where(
                        RoleAssignment.user_id == User.id, RoleAssignment.project_id == pid
                    )
                )
            return paginate(session, stmt, User, limit=limit, marker=marker, sort_column=User.name)

    def get(self, ctx: RequestContext, ref: str) -> User:
        with self.core.db.read() as session:
            row = self._visible(session, ctx, ref)
            policy.enforce(ctx, "identity:user:show", owner_id=row.id)
            return row

    def update(self, ctx: RequestContext, ref: str, changes: dict[str, Any]) -> User:
        changes = dict(changes)
        with self.core.db.transaction() as session:
            row = self._visible(session, ctx, ref)
            policy.enforce(ctx, "identity:user:update", owner_id=row.id)
            revoke = False
            if "password" in changes:
                password = changes.pop("password")
                check_password_strength(password)
                changes["password_hash"] = self.core.hasher.hash(password)
                changes["password_changed_at"] = utcnow()
                revoke = True
            if changes.get("enabled") is False:
                if _cloud_admin_count(session, excluding_user=row.id) == 0:
                    raise Conflict(
                        "this is the last enabled cloud admin; it cannot be disabled",
                        code="nubes.user.in_use",
                    )
                revoke = True
            if "default_project" in changes:
                ref_project = changes.pop("default_project")
                changes["default_project_id"] = (
                    find_project(session, ref_project).id if ref_project else None
                )
            new_name = changes.get("name")
            if new_name and new_name != row.name and taken(session, User.name, new_name):
                raise AlreadyExists(f"user {new_name!r} exists", code="nubes.user.exists")
            compare_and_swap(session, User, row.id, row.generation, changes)
            if revoke:
                revoke_user_tokens(session, self.core.settings, row.id)
            session.refresh(row)
            changed = sorted(k for k in changes if k != "password_hash")
            events.record(
                session, ctx, "user.updated", "user", row.id, payload={"changed": changed}
            )
            return row

    def change_own_password(
        self, ctx: RequestContext, ref: str, original: str, password: str
    ) -> None:
        """Any user may change their own password, proving the old one; all their tokens die."""
        with self.core.db.read() as session:
            row = self._visible(session, ctx, ref)
        policy.enforce(ctx, "identity:user:change_password", owner_id=row.id)
        if row.id != ctx.user_id:
            raise NotFound(f"no user {ref!r}", code="nubes.user.not_found")
        if not self.core.hasher.verify(row.password_hash, original):
            raise NotAuthenticated(
                "original_password is wrong", code="nubes.auth.invalid_credentials"
            )
        self.update(RequestContext.system(ctx.request_id), row.id, {"password": password})

    def delete(self, ctx: RequestContext, ref: str) -> None:
        with self.core.db.transaction() as session:
            row = self._visible(session, ctx, ref)
            policy.enforce(ctx, "identity:user:delete", owner_id=row.id)
            if _cloud_admin_count(session, excluding_user=row.id) == 0:
                raise Conflict(
                    "this is the last enabled cloud admin; it cannot be deleted",
                    code="nubes.user.in_use",
                )
            if session.scalar(select(exists().where(Keypair.user_id == row.id))):
                raise Conflict(
                    f"user {row.name!r} still owns keypairs; delete them first",
                    code="nubes.user.in_use",
                )
            revoke_user_tokens(session, self.core.settings, row.id)
            session.delete(row)
            events.record(session, ctx, "user.deleted", "user", row.id)

    def revoke_tokens(self, ctx: RequestContext, ref: str) -> None:
        with self.core.db.transaction() as session:
            row = self._visible(session, ctx, ref)
            policy.enforce(ctx, "identity:user:revoke_tokens", owner_id=row.id)
            revoke_user_tokens(session, self.core.settings, row.id)
            events.record(session, ctx, "user.tokens_revoked", "user", row.id)

    # role assignments -------------------------------------------------------------------

    def grant(self, ctx: RequestContext, user: str, project: str, role: str) -> RoleAssignment:
        policy.enforce(ctx, "identity:role_assignment:grant")
        granted = Role.parse(role)
        with self.core.db.transaction() as session:
            u, p = find_user(session, user), find_project(session, project)
            row = session.get(RoleAssignment, (u.id, p.id, granted.name))
            if row is None:
                row = RoleAssignment(user_id=u.id, project_id=p.id, role=granted.name)
                session.add(row)
                session.flush()
                events.record(
                    session,
                    ctx,
                    "role.granted",
                    "user",
                    u.id,
                    project_id=p.id,
                    payload={"role": granted.name},
                )
            return row

    def revoke(self, ctx: RequestContext, user: str, project: str, role: str) -> None:
        policy.enforce(ctx, "identity:role_assignment:revoke")
        revoked = Role.parse(role)
        with self.core.db.transaction() as session:
            u, p = find_user(session, user), find_project(session, project)
            row = session.get(RoleAssignment, (u.id, p.id, revoked.name))
            if row is None:
                raise NotFound(
                    f"user {u.name!r} has no role {revoked.name!r} on project {p.name!r}",
                    code="nubes.role.not_found",
                )
            session.delete(row)
            session.flush()
            if p.is_admin_project and revoked is Role.admin and _cloud_admin_count(session) == 0:
                raise Conflict(
                    "that would leave the cloud without an admin", code="nubes.user.in_use"
                )
            events.record(
                session,
                ctx,
                "role.revoked",
                "user",
                u.id,
                project_id=p.id,
                payload={"role": revoked.name},
            )

    def assignments(
        self, ctx: RequestContext, *, user: str | None = None, project: str | None = None
    ) -> list[RoleAssignment]:
        with self.core.db.read() as session:
            stmt = select(RoleAssignment)
            if user is not None:
                stmt = stmt.where(RoleAssignment.user_id == find_user(session, user).id)
            if project is not None:
                pid = find_project(session, project).id
                if not ctx.is_cloud_admin and pid != ctx.project_id:
                    raise NotFound(f"no project {project!r}", code="nubes.project.not_found")
                stmt = stmt.where(RoleAssignment.project_id == pid)
            elif not ctx.is_cloud_admin:
                stmt = stmt.where(RoleAssignment.project_id == ctx.project_id)
            policy.enforce(ctx, "identity:role_assignment:list", project_id=ctx.project_id)
            return list(
                session.scalars(stmt.order_by(RoleAssignment.project_id, RoleAssignment.user_id))
            )
