"""Security groups and their rules (allow rules; what no rule allows is dropped at the port).

Every project has a group named ``default`` — made on first need (a port made without naming
groups, or bootstrap) with Neutron's rules: all egress, ingress from members of the same group.
It cannot be deleted or renamed. Groups and rules count against the ``security_groups`` and
``security_group_rules`` quotas of their project, default group included (as in Neutron).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.domain.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from nubes.identity import policy, quotas
from nubes.identity.core import IdentityCore
from nubes.network.common import guarded_delete
from nubes.network.lookup import find_security_group, own_clause
from nubes.network.rules import RuleSpec, make_rule
from nubes.store import events
from nubes.store.cas import compare_and_swap
from nubes.store.models import PortSecurityGroup, SecurityGroup, SecurityGroupRule
from nubes.store.query import paginate

DEFAULT_GROUP = "default"


@dataclass(frozen=True)
class GroupInfo:
    group: SecurityGroup
    rules: list[SecurityGroupRule]


def default_rules(group_id: str) -> list[RuleSpec]:
    """Neutron's: every egress, and ingress from the group's own members, for both families."""
    return [
        make_rule(direction=direction, ethertype=family, remote_group_id=remote)
        for family in ("IPv4", "IPv6")
        for direction, remote in (("egress", None), ("ingress", group_id))
    ]


def _add_rule(
    session: Session, group: SecurityGroup, spec: RuleSpec, description: str = ""
) -> SecurityGroupRule:
    row = SecurityGroupRule(
        security_group_id=group.id,
        project_id=group.project_id,
        description=description,
        direction=spec.direction,
        ethertype=spec.ethertype,
        protocol=spec.protocol,
        port_range_min=spec.port_range_min,
        port_range_max=spec.port_range_max,
        remote_ip_prefix=spec.remote_ip_prefix,
        remote_group_id=spec.remote_group_id,
    )
    session.add(row)
    return row


def ensure_default_group(
    session: Session, ctx: RequestContext, project_id: str, defaults: Mapping[str, int]
) -> SecurityGroup:
    """The project's ``default`` group, made now if missing. Two transactions making it at once
    meet on the (project, name) constraint; the loser's savepoint rolls back (its quota charge
    with it) and it reads the winner's group."""
    found = _default_of(session, project_id)
    if found is not None:
        return found
    try:
        with session.begin_nested():
            quotas.charge(
                session,
                project_id,
                {"security_groups": 1, "security_group_rules": 4},
                defaults,
            )
            group = SecurityGroup(
                name=DEFAULT_GROUP, project_id=project_id, description="Default security group"
            )
            session.add(group)
            session.flush()
            for spec in default_rules(group.id):
                _add_rule(session, group, spec)
            session.flush()
            events.record(
                session,
                ctx,
                "security_group.created",
                "security_group",
                group.id,
                project_id=project_id,
                payload={"name": DEFAULT_GROUP},
            )
    except IntegrityError:
        found = _default_of(session, project_id)
        if found is None:
            raise
        return found
    return group


def _default_of(session: Session, project_id: str) -> SecurityGroup | None:
    return session.scalar(
        select(SecurityGroup).where(
            SecurityGroup.project_id == project_id, SecurityGroup.name == DEFAULT_GROUP
        )
    )


def resolve_groups(
    session: Session,
    ctx: RequestContext,
    refs: Sequence[str],
    project_id: str,
    defaults: Mapping[str, int],
) -> list[str]:
    """Group ids for a port of ``project_id``; ``default`` is made on first need."""
    ids: list[str] = []
    for ref in refs:
        if ref == DEFAULT_GROUP:
            group = ensure_default_group(session, ctx, project_id, defaults)
        else:
            group = find_security_group(session, ctx, ref)
            if group.project_id != project_id:
                raise InvalidInput(
                    f"security_groups: {ref!r} belongs to another project than the port"
                )
        if group.id not in ids:
            ids.append(group.id)
    return ids


def rules_of(session: Session, group_ids: Sequence[str]) -> dict[str, list[SecurityGroupRule]]:
    result: dict[str, list[SecurityGroupRule]] = {gid: [] for gid in group_ids}
    if group_ids:
        rows = session.scalars(
            select(SecurityGroupRule)
            .where(SecurityGroupRule.security_group_id.in_(list(group_ids)))
            .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)
        )
        for row in rows:
            result[row.security_group_id].append(row)
    return result


def _rule_not_found(ref: str) -> NotFound:
    return NotFound(f"no security group rule {ref!r}", code="nubes.security_group_rule.not_found")


class SecurityGroupService:
    def __init__(self, core: IdentityCore) -> None:
        self.core = core

    @property
    def _defaults(self) -> Mapping[str, int]:
        return self.core.settings.default_quotas

    def _info(self, session: Session, group: SecurityGroup) -> GroupInfo:
        return GroupInfo(group, rules_of(session, [group.id])[group.id])

    def create(self, ctx: RequestContext, name: str, description: str = "") -> GroupInfo:
        policy.enforce(ctx, "network:security_group:create", project_id=ctx.project_id)
        assert ctx.project_id is not None
        with self.core.db.transaction() as session:
            if name == DEFAULT_GROUP:
                if _default_of(session, ctx.project_id) is not None:
                    raise AlreadyExists(
                        "the project already has its default group",
                        code="nubes.security_group.exists",
                    )
                return self._info(
                    session, ensure_default_group(session, ctx, ctx.project_id, self._defaults)
                )
            quotas.charge(session, ctx.project_id, {"security_groups": 1}, self._defaults)
            group = SecurityGroup(name=name, project_id=ctx.project_id, description=description)
            try:
                with session.begin_nested():
                    session.add(group)
                    session.flush()
            except IntegrityError:
                raise AlreadyExists(
                    f"the project already has a security group {name!r}",
                    code="nubes.security_group.exists",
                ) from None
            events.record(
                session,
                ctx,
                "security_group.created",
                "security_group",
                group.id,
                project_id=group.project_id,
                payload={"name": name},
            )
            return GroupInfo(group, [])

    def list_groups(
        self,
        ctx: RequestContext,
        *,
        name: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[GroupInfo]:
        policy.enforce(ctx, "network:security_group:list", project_id=ctx.project_id)
        stmt = select(SecurityGroup).where(own_clause(SecurityGroup, ctx))
        if name is not None:
            stmt = stmt.where(SecurityGroup.name == name)
        with self.core.db.read() as session:
            rows = paginate(
                session,
                stmt,
                SecurityGroup,
                limit=limit,
                marker=marker,
                sort_column=SecurityGroup.created_at,
            )
            rules = rules_of(session, [r.id for r in rows])
            return [GroupInfo(r, rules[r.id]) for r in rows]

    def get(self, ctx: RequestContext, ref: str) -> GroupInfo:
        with self.core.db.read() as session:
            group = find_security_group(session, ctx, ref)
            policy.enforce(ctx, "network:security_group:show", project_id=group.project_id)
            return self._info(session, group)

    def update(self, ctx: RequestContext, ref: str, changes: dict[str, str]) -> GroupInfo:
        with self.core.db.transaction() as session:
            group = find_security_group(session, ctx, ref)
            policy.enforce(ctx, "network:security_group:update", project_id=group.project_id)
            new_name = changes.get("name")
            if new_name is not None and new_name != group.name:
                if DEFAULT_GROUP in (group.name, new_name):
                    raise Conflict(
                        "the default security group keeps its name, and no other group takes it",
                        code="nubes.security_group.protected",
                    )
                clash = session.scalar(
                    select(SecurityGroup.id).where(
                        SecurityGroup.project_id == group.project_id,
                        SecurityGroup.name == new_name,
                    )
                )
                if clash:
                    raise AlreadyExists(
                        f"the project already has a security group {new_name!r}",
                        code="nubes.security_group.exists",
                    )
            try:
                with session.begin_nested():
                    compare_and_swap(session, SecurityGroup, group.id, group.generation, changes)
            except IntegrityError:  # a racing rename took the name
                raise AlreadyExists(
                    f"the project already has a security group {new_name!r}",
                    code="nubes.security_group.exists",
                ) from None
            session.refresh(group)
            events.record(
                session,
                ctx,
                "security_group.updated",
                "security_group",
                group.id,
                project_id=group.project_id,
                payload={"changed": sorted(changes)},
            )
            session.flush()
            return self._info(session, group)

    def delete(self, ctx: RequestContext, ref: str) -> None:
        with self.core.db.transaction() as session:
            group = find_security_group(session, ctx, ref)
            policy.enforce(ctx, "network:security_group:delete", project_id=group.project_id)
            if group.name == DEFAULT_GROUP:
                raise Conflict(
                    "the default security group cannot be deleted",
                    code="nubes.security_group.protected",
                )
            users = session.scalar(
                select(func.count())
                .select_from(PortSecurityGroup)
                .where(PortSecurityGroup.security_group_id == group.id)
            )
            if users:
                raise Conflict(
                    f"security group {group.name!r} is in use by {users} port(s); take it off "
                    "them first",
                    code="nubes.security_group.in_use",
                )
            self._drop_rules(session, group)
            quotas.release(session, group.project_id, {"security_groups": 1})
            gone = guarded_delete(
                session,
                delete(SecurityGroup).where(SecurityGroup.id == group.id),
                Conflict(
                    f"security group {group.name!r} was just given to a port; take it off first",
                    code="nubes.security_group.in_use",
                ),
            )
            if gone != 1:
                raise NotFound(f"no security group {ref!r}", code="nubes.security_group.not_found")
            events.record(
                session,
                ctx,
                "security_group.deleted",
                "security_group",
                group.id,
                project_id=group.project_id,
                payload={"name": group.name},
            )

    def _drop_rules(self, session: Session, group: SecurityGroup) -> None:
        """Its own rules, and other groups' rules naming it as remote (Neutron drops those
        too), each released from its own project's quota."""
        owners = session.execute(
            select(SecurityGroupRule.project_id, func.count())
            .where(
                (SecurityGroupRule.security_group_id == group.id)
                | (SecurityGroupRule.remote_group_id == group.id)
            )
            .group_by(SecurityGroupRule.project_id)
        ).all()
        for project_id, count in owners:
            quotas.release(session, project_id, {"security_group_rules": int(count)})
        session.execute(
            delete(SecurityGroupRule).where(
                (SecurityGroupRule.security_group_id == group.id)
                | (SecurityGroupRule.remote_group_id == group.id)
            )
        )

    # rules --------------------------------------------------------------------------------

    def create_rule(
        self,
        ctx: RequestContext,
        group_ref: str,
        *,
        direction: str,
        ethertype: str = "IPv4",
        protocol: str | None = None,
        port_range_min: int | None = None,
        port_range_max: int | None = None,
        remote_ip_prefix: str | None = None,
        remote_group: str | None = None,
        description: str = "",
    ) -> SecurityGroupRule:
        with self.core.db.transaction() as session:
            group = find_security_group(session, ctx, group_ref)
            policy.enforce(ctx, "network:security_group_rule:create", project_id=group.project_id)
            remote_id = None
            if remote_group is not None:
                remote_id = find_security_group(session, ctx, remote_group).id
            spec = make_rule(
                direction=direction,
                ethertype=ethertype,
                protocol=protocol,
                port_range_min=port_range_min,
                port_range_max=port_range_max,
                remote_ip_prefix=remote_ip_prefix,
                remote_group_id=remote_id,
            )
            for existing in rules_of(session, [group.id])[group.id]:
                if _spec_of(existing).key() == spec.key():
                    raise AlreadyExists(
                        f"security group {group.name!r} already has this rule ({existing.id})",
                        code="nubes.security_group_rule.exists",
                    )
            quotas.charge(session, group.project_id, {"security_group_rules": 1}, self._defaults)
            row = _add_rule(session, group, spec, description)
            session.flush()
            events.record(
                session,
                ctx,
                "security_group_rule.created",
                "security_group_rule",
                row.id,
                project_id=group.project_id,
                payload={"security_group_id": group.id},
            )
            return row

    def list_rules(
        self,
        ctx: RequestContext,
        *,
        group: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[SecurityGroupRule]:
        policy.enforce(ctx, "network:security_group_rule:list", project_id=ctx.project_id)
        stmt = select(SecurityGroupRule).where(own_clause(SecurityGroupRule, ctx))
        with self.core.db.read() as session:
            if group is not None:
                gid = find_security_group(session, ctx, group).id
                stmt = stmt.where(SecurityGroupRule.security_group_id == gid)
            return paginate(
                session,
                stmt,
                SecurityGroupRule,
                limit=limit,
                marker=marker,
                sort_column=SecurityGroupRule.created_at,
            )

    def _find_rule(self, session: Session, ctx: RequestContext, ref: str) -> SecurityGroupRule:
        row = session.scalar(
            select(SecurityGroupRule).where(
                SecurityGroupRule.id == ref, own_clause(SecurityGroupRule, ctx)
            )
        )
        if row is None:
            raise _rule_not_found(ref)
        return row

    def get_rule(self, ctx: RequestContext, ref: str) -> SecurityGroupRule:
        with self.core.db.read() as session:
            row = self._find_rule(session, ctx, ref)
            policy.enforce(ctx, "network:security_group_rule:show", project_id=row.project_id)
            return row

    def delete_rule(self, ctx: RequestContext, ref: str) -> None:
        with self.core.db.transaction() as session:
            row = self._find_rule(session, ctx, ref)
            policy.enforce(ctx, "network:security_group_rule:delete", project_id=row.project_id)
            quotas.release(session, row.project_id, {"security_group_rules": 1})
            gone = session.execute(
                delete(SecurityGroupRule)
                .where(SecurityGroupRule.id == row.id)
                .execution_options(synchronize_session=False)
            )
            if gone.rowcount != 1:  # type: ignore[attr-defined]
                raise _rule_not_found(ref)
            events.record(
                session,
                ctx,
                "security_group_rule.deleted",
                "security_group_rule",
                row.id,
                project_id=row.project_id,
                payload={"security_group_id": row.security_group_id},
            )


def _spec_of(row: SecurityGroupRule) -> RuleSpec:
    return RuleSpec(
        row.direction,
        row.ethertype,
        row.protocol,
        row.port_range_min,
        row.port_range_max,
        row.remote_ip_prefix,
        row.remote_group_id,
    )
