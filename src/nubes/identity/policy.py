"""Who may do what: one table, one rule per action.

Rules
- ``admin``: a cloud admin (the admin role on the admin project).
- ``member`` / ``reader``: that role or higher on the *target* project (a cloud admin passes).
- ``owner-member`` / ``owner-reader``: as above, and the target belongs to the caller
  (user-owned things such as keypairs and credentials).
- ``authenticated``: any valid token.

Visibility is not decided here: services look resources up *within the caller's scope*, so a
resource of another project is "not found" (404), never "forbidden" (403). Policy answers
only "may this caller, who can see the target, do this to it?"
"""

from __future__ import annotations

from enum import StrEnum

from nubes.domain.context import RequestContext
from nubes.domain.errors import Forbidden
from nubes.domain.roles import Role


class Rule(StrEnum):
    admin = "admin"
    member = "member"
    reader = "reader"
    owner_member = "owner-member"
    owner_reader = "owner-reader"
    authenticated = "authenticated"


RULES: dict[str, Rule] = {
    # identity
    "identity:project:create": Rule.admin,
    "identity:project:list": Rule.authenticated,  # non-admins see their own projects
    "identity:project:show": Rule.reader,
    "identity:project:update": Rule.admin,
    "identity:project:delete": Rule.admin,
    "identity:user:create": Rule.admin,
    "identity:user:list": Rule.admin,
    "identity:user:show": Rule.owner_reader,
    "identity:user:update": Rule.admin,
    "identity:user:change_password": Rule.owner_reader,
    "identity:user:delete": Rule.admin,
    "identity:user:revoke_tokens": Rule.owner_reader,
    "identity:role:list": Rule.authenticated,
    "identity:role_assignment:list": Rule.reader,
    "identity:role_assignment:grant": Rule.admin,
    "identity:role_assignment:revoke": Rule.admin,
    "identity:token:validate": Rule.authenticated,
    "identity:token:revoke": Rule.authenticated,  # own tokens; others need admin (below)
    "identity:token:revoke_any": Rule.admin,
    "identity:token:rotate_keys": Rule.admin,
    "identity:ec2_credential:create": Rule.owner_member,
    "identity:ec2_credential:list": Rule.owner_reader,
    "identity:ec2_credential:delete": Rule.owner_member,
    "identity:app_credential:create": Rule.owner_member,
    "identity:app_credential:list": Rule.owner_reader,
    "identity:app_credential:delete": Rule.owner_member,
    "identity:quota:show": Rule.reader,
    "identity:quota:update": Rule.admin,
    "identity:status:show": Rule.admin,
    # compute catalogue
    "compute:flavor:list": Rule.authenticated,
    "compute:flavor:show": Rule.authenticated,
    "compute:flavor:create": Rule.admin,
    "compute:flavor:update": Rule.admin,
    "compute:flavor:delete": Rule.admin,
    "compute:flavor:access": Rule.admin,
    "compute:keypair:list": Rule.owner_reader,
    "compute:keypair:show": Rule.owner_reader,
    "compute:keypair:create": Rule.owner_member,
    "compute:keypair:delete": Rule.owner_member,
    "compute:instance:create": Rule.member,
    "compute:instance:list": Rule.reader,
    "compute:instance:show": Rule.reader,
    "compute:instance:action": Rule.member,
    "compute:instance:delete": Rule.member,
    "compute:instance:console": Rule.member,
    # images (minimal registry; the image service is a later issue)
    "images:image:create": Rule.member,
    "images:image:publicize": Rule.admin,
    "images:image:list": Rule.authenticated,
    "images:image:show": Rule.authenticated,
    "images:image:upload": Rule.member,
    "images:image:delete": Rule.member,
    # hosts
    "hosts:join_token:create": Rule.admin,
    "hosts:host:list": Rule.admin,
    "hosts:host:show": Rule.admin,
    "hosts:host:update": Rule.admin,
    "hosts:host:delete": Rule.admin,
    "hosts:service:list": Rule.admin,
    "hosts:probes:sync": Rule.admin,
    # scheduling administration: aggregates and zones (hosts), server groups (compute)
    "hosts:aggregate:create": Rule.admin,
    "hosts:aggregate:list": Rule.admin,
    "hosts:aggregate:show": Rule.admin,
    "hosts:aggregate:update": Rule.admin,
    "hosts:aggregate:delete": Rule.admin,
    "hosts:zone:list": Rule.authenticated,  # hosts per zone only for cloud admins
    "compute:server_group:create": Rule.member,
    "compute:server_group:list": Rule.reader,
    "compute:server_group:show": Rule.reader,
    "compute:server_group:delete": Rule.member,
    # networking (visibility: own project, shared and external networks)
    "network:network:create": Rule.member,
    "network:network:provider": Rule.admin,  # shared, external, flat/vlan, a chosen segment
    "network:network:list": Rule.reader,
    "network:network:show": Rule.reader,
    "network:network:update": Rule.member,
    "network:network:delete": Rule.member,
    "network:subnet:create": Rule.member,
    "network:subnet:list": Rule.reader,
    "network:subnet:show": Rule.reader,
    "network:subnet:update": Rule.member,
    "network:subnet:delete": Rule.member,
    "network:port:create": Rule.member,
    "network:port:list": Rule.reader,
    "network:port:show": Rule.reader,
    "network:port:update": Rule.member,
    "network:port:delete": Rule.member,
    "network:security_group:create": Rule.member,
    "network:security_group:list": Rule.reader,
    "network:security_group:show": Rule.reader,
    "network:security_group:update": Rule.member,
    "network:security_group:delete": Rule.member,
    "network:security_group_rule:create": Rule.member,
    "network:security_group_rule:list": Rule.reader,
    "network:security_group_rule:show": Rule.reader,
    "network:security_group_rule:delete": Rule.member,
    "network:router:create": Rule.member,
    "network:router:list": Rule.reader,
    "network:router:show": Rule.reader,
    "network:router:update": Rule.member,
    "network:router:delete": Rule.member,
    "network:floating_ip:create": Rule.member,
    "network:floating_ip:list": Rule.reader,
    "network:floating_ip:show": Rule.reader,
    "network:floating_ip:update": Rule.member,
    "network:floating_ip:delete": Rule.member,
}


def allowed(
    ctx: RequestContext,
    action: str,
    *,
    project_id: str | None = None,
    owner_id: str | None = None,
) -> bool:
    rule = RULES[action]  # a KeyError here is a programming error: every action has a rule
    if ctx.is_cloud_admin:
        return True
    if rule is Rule.authenticated:
        return ctx.user_id is not None
    if rule is Rule.admin:
        return False
    needed = Role.member if rule in (Rule.member, Rule.owner_member) else Role.reader
    if not ctx.has_role(needed):
        return False
    if rule in (Rule.owner_member, Rule.owner_reader):
        return owner_id is None or owner_id == ctx.user_id
    return project_id is None or project_id == ctx.project_id


def enforce(
    ctx: RequestContext,
    action: str,
    *,
    project_id: str | None = None,
    owner_id: str | None = None,
) -> None:
    if not allowed(ctx, action, project_id=project_id, owner_id=owner_id):
        rule = RULES[action]
        need = {
            Rule.admin: "a cloud admin",
            Rule.member: "the member or admin role on the project",
            Rule.owner_member: "the member or admin role",
            Rule.reader: "a role on the project",
            Rule.owner_reader: "a role on the project",
            Rule.authenticated: "a valid token",
        }[rule]
        role = ctx.highest_role.name if ctx.highest_role else "no role"
        raise Forbidden(f"{action} needs {need}; your token has {role}")
