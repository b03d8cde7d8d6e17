"""Server groups: instances a project wants placed together (affinity) or apart
(anti-affinity), strictly or as a preference (soft-). The scheduler reads a group's policy and
where its members run (:func:`group_view`); instance create and delete keep the membership
(:meth:`ServerGroupService.add_member`, :func:`remove_member`).

Groups belong to a project, like Nova's: another project's group does not exist for the
caller (404). Quotas: ``server_groups`` per group, ``server_group_members`` per member, both
counted over the project (Nova counts members per group; one usage row per project keeps the
guarded-update race safety of :mod:`nubes.identity.quotas`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.domain.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from nubes.identity import policy, quotas
from nubes.identity.core import IdentityCore
from nubes.store import events
from nubes.store.models import Instance, ServerGroup, ServerGroupMember
from nubes.store.query import delete_row, paginate

POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")


@dataclass(frozen=True)
class Member:
    id: str
    name: str
    state: str


@dataclass(frozen=True)
class GroupDetail:
    group: ServerGroup
    members: tuple[Member, ...]


@dataclass(frozen=True)
class GroupView:
    """What the scheduler needs of a group: its policy and the hosts its live members use."""

    id: str
    policy: str
    host_ids: frozenset[str]
    members: int  # live members, placed or not


def _not_found(ref: str) -> NotFound:
    return NotFound(f"no server group {ref!r}", code="nubes.server_group.not_found")


def find_group(
    session: Session, project_id: str | None, ref: str, *, lock: bool = False
) -> ServerGroup:
    """By id or name within ``project_id`` (None: any project, for cloud admins). ``lock``
    holds the row, so a member is never added to a group being deleted."""
    scope = select(ServerGroup)
    if project_id is not None:
        scope = scope.where(ServerGroup.project_id == project_id)
    if lock:
        scope = scope.with_for_update().execution_options(populate_existing=True)
    row = session.scalar(scope.where(ServerGroup.id == ref))
    if row is None:
        matches = list(session.scalars(scope.where(ServerGroup.name == ref).limit(2)))
        if len(matches) > 1:
            raise Conflict(
                f"several server groups are named {ref!r}; use the id",
                code="nubes.server_group.exists",
            )
        row = matches[0] if matches else None
    if row is None:
        raise _not_found(ref)
    return row


def group_view(session: Session, group_id: str) -> GroupView:
    """The policy and the hosts of the group's members that are not deleted."""
    group = session.get(ServerGroup, group_id)
    if group is None:
        raise _not_found(group_id)
    live = (
        select(Instance.host_id)
        .join(ServerGroupMember, ServerGroupMember.instance_id == Instance.id)
        .where(ServerGroupMember.group_id == group_id, Instance.state != "deleted")
    )
    hosts = list(session.scalars(live))
    return GroupView(
        id=group.id,
        policy=group.policy,
        host_ids=frozenset(h for h in hosts if h is not None),
        members=len(hosts),
    )


#: an instance's group, built once: every delete asks (almost always to hear "none")
_GROUP_OF = select(ServerGroupMember.group_id).where(
    ServerGroupMember.instance_id == bindparam("instance_id")
)


def remove_member(session: Session, instance_id: str) -> bool:
    """Drop an instance's membership and give its ``server_group_members`` quota back; call
    it in the transaction that deletes the instance (instances are soft-deleted, so the
    foreign-key cascade never fires). False when it was in no group."""
    group_id = session.scalar(_GROUP_OF, {"instance_id": instance_id})
    if group_id is None:
        return False
    group = session.get(ServerGroup, group_id)
    gone = session.execute(
        delete(ServerGroupMember)
        .where(ServerGroupMember.instance_id == instance_id)
        .execution_options(synchronize_session=False)
    )
    if group is not None and gone.rowcount == 1:  # type: ignore[attr-defined]
        quotas.release(session, group.project_id, {"server_group_members": 1})
    return True


class ServerGroupService:
    def __init__(self, core: IdentityCore) -> None:
        self.core = core

    def _scope(self, ctx: RequestContext) -> str | None:
        return None if ctx.is_cloud_admin else ctx.project_id

    def create(self, ctx: RequestContext, name: str, group_policy: str) -> ServerGroup:
        policy.enforce(ctx, "compute:server_group:create", project_id=ctx.project_id)
        if group_policy not in POLICIES:
            raise InvalidInput(f"policy: one of {', '.join(POLICIES)}, not {group_policy!r}")
        assert ctx.project_id is not None
        assert ctx.user_id is not None
        with self.core.db.transaction() as session:
            clash = select(ServerGroup.id).where(
                ServerGroup.project_id == ctx.project_id, ServerGroup.name == name
            )
            if session.scalar(clash) is not None:
                raise AlreadyExists(
                    f"this project already has a server group {name!r}",
                    code="nubes.server_group.exists",
                )
            quotas.charge(
                session, ctx.project_id, {"server_groups": 1}, self.core.settings.default_quotas
            )
            row = ServerGroup(
                name=name, project_id=ctx.project_id, user_id=ctx.user_id, policy=group_policy
            )
            session.add(row)
            session.flush()
            events.record(
                session,
                ctx,
                "server_group.created",
                "server_group",
                row.id,
                project_id=row.project_id,
                payload={"name": name, "policy": group_policy},
            )
            return row

    def list_groups(
        self,
        ctx: RequestContext,
        *,
        name: str | None = None,
        all_projects: bool = False,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[ServerGroup]:
        policy.enforce(ctx, "compute:server_group:list", project_id=ctx.project_id)
        stmt = select(ServerGroup)
        if not (ctx.is_cloud_admin and all_projects):
            stmt = stmt.where(ServerGroup.project_id == ctx.project_id)
        if name is not None:
            stmt = stmt.where(ServerGroup.name == name)
        with self.core.db.read() as session:
            return paginate(
                session, stmt, ServerGroup, limit=limit, marker=marker, sort_column=ServerGroup.name
            )

    def get(self, ctx: RequestContext, ref: str) -> GroupDetail:
        with self.core.db.read() as session:
            row = find_group(session, self._scope(ctx), ref)
            policy.enforce(ctx, "compute:server_group:show", project_id=row.project_id)
            members = session.execute(
                select(Instance.id, Instance.name, Instance.state)
                .join(ServerGroupMember, ServerGroupMember.instance_id == Instance.id)
                .where(ServerGroupMember.group_id == row.id, Instance.state != "deleted")
                .order_by(Instance.name, Instance.id)
            )
            return GroupDetail(row, tuple(Member(*m) for m in members))

    def delete(self, ctx: RequestContext, ref: str) -> None:
        """The members keep running; only their membership (and its quota) goes."""
        with self.core.db.transaction() as session:
            row = find_group(session, self._scope(ctx), ref, lock=True)
            policy.enforce(ctx, "compute:server_group:delete", project_id=row.project_id)
            members = session.scalar(
                select(func.count())
                .select_from(ServerGroupMember)
                .where(ServerGroupMember.group_id == row.id)
            )
            # The group row is locked before the usage rows, as add_member locks them: a
            # delete and an instance joining the group take turns instead of deadlocking.
            quotas.release(
                session,
                row.project_id,
                {"server_groups": 1, "server_group_members": members or 0},
            )
            session.execute(
                delete(ServerGroupMember)
                .where(ServerGroupMember.group_id == row.id)
                .execution_options(synchronize_session=False)
            )
            if not delete_row(session, ServerGroup, row.id):
                raise _not_found(ref)
            events.record(
                session,
                ctx,
                "server_group.deleted",
                "server_group",
                row.id,
                project_id=row.project_id,
                payload={"name": row.name, "members": members or 0},
            )

    def add_member(
        self, session: Session, ctx: RequestContext, group_ref: str, instance_id: str
    ) -> ServerGroup:
        """Put a just-created instance (flushed, in ``session``) in a group of the caller's
        project, charging ``server_group_members``; the caller's transaction commits both."""
        group = find_group(session, ctx.project_id, group_ref, lock=True)
        instance = session.get(Instance, instance_id)
        if instance is None or instance.project_id != group.project_id:
            raise NotFound(f"no instance {instance_id!r}", code="nubes.instance.not_found")
        taken = session.scalar(
            select(ServerGroupMember.group_id).where(ServerGroupMember.instance_id == instance_id)
        )
        if taken is not None:
            raise Conflict(
                f"instance {instance.name!r} is already in a server group",
                code="nubes.instance.invalid_state",
            )
        quotas.charge(
            session,
            group.project_id,
            {"server_group_members": 1},
            self.core.settings.default_quotas,
        )
        session.add(ServerGroupMember(group_id=group.id, instance_id=instance_id))
        session.flush()
        return group

    @staticmethod
    def group_view(session: Session, group_id: str) -> GroupView:
        return group_view(session, group_id)

    @staticmethod
    def remove_member(session: Session, instance_id: str) -> bool:
        return remove_member(session, instance_id)
