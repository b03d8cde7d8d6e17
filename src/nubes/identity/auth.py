"""Authentication: password, token (re-scope) and application-credential methods issue a
token; ``validate`` turns a token into a :class:`RequestContext` on every request.

Validation costs one decrypt and one indexed statement, and it reads live state each time, so a
revoked token, a disabled user or project, or a removed role takes effect on the very next
request, on every controller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, bindparam, exists, or_, select
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.domain.errors import NotAuthenticated
from nubes.domain.roles import Role
from nubes.identity import policy, tokens
from nubes.identity.core import IdentityCore
from nubes.identity.revocation import revoke_token
from nubes.store import events
from nubes.store.models import (
    ApplicationCredential,
    Project,
    RoleAssignment,
    TokenRevocation,
    User,
)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    context: RequestContext


def _bad_credentials() -> NotAuthenticated:
    # One message for unknown user and wrong password: no user enumeration.
    return NotAuthenticated("wrong user name or password", code="nubes.auth.invalid_credentials")


class AuthService:
    def __init__(self, core: IdentityCore) -> None:
        self.core = core

    # issuing --------------------------------------------------------------------------------

    def authenticate_password(
        self,
        username: str,
        password: str,
        project: str | None = None,
        request_id: str | None = None,
    ) -> IssuedToken:
        with self.core.db.read() as session:
            user = session.scalar(select(User).where(User.name == username))
        if not self.core.hasher.verify(user.password_hash if user else None, password):
            raise _bad_credentials()
        assert user is not None
        return self._issue(user.id, project, ("password",), request_id=request_id)

    def authenticate_token(
        self, token: str, project: str | None = None, request_id: str | None = None
    ) -> IssuedToken:
        """Re-scope: a valid token buys a new one, for the same or another project of its user.
        The new token expires no later than the old one."""
        ctx = self.validate(token)
        assert ctx.user_id is not None
        return self._issue(
            ctx.user_id,
            project or ctx.project_id,
            tuple(sorted({*ctx.methods, "token"})),
            expires_at=ctx.expires_at,
            request_id=request_id,
        )

    def authenticate_app_credential(
        self, credential_id: str, secret: str, request_id: str | None = None
    ) -> IssuedToken:
        with self.core.db.read() as session:
            cred = session.get(ApplicationCredential, credential_id)
        if not self.core.hasher.verify(cred.secret_hash if cred else None, secret):
            raise NotAuthenticated(
                "wrong application credential id or secret", code="nubes.auth.invalid_credentials"
            )
        assert cred is not None
        if cred.expires_at is not None and cred.expires_at <= datetime.now(UTC):
            raise NotAuthenticated(
                f"application credential {cred.name!r} expired at {cred.expires_at.isoformat()}",
                code="nubes.credential.expired",
            )
        return self._issue(
            cred.user_id,
            cred.project_id,
            ("application_credential",),
            app_cred_id=cred.id,
            delegated_roles=cred.roles,
            request_id=request_id,
        )

    def _issue(
        self,
        user_id: str,
        project: str | None,
        methods: tuple[str, ...],
        *,
        expires_at: float | None = None,
        app_cred_id: str | None = None,
        delegated_roles: str | None = None,
        request_id: str | None = None,
    ) -> IssuedToken:
        with self.core.db.read() as session:
            user = session.get(User, user_id)
            if user is None:
                raise _bad_credentials()
            if not user.enabled:
                raise NotAuthenticated(
                    f"user {user.name!r} is disabled", code="nubes.auth.disabled"
                )
            target = project or user.default_project_id
            if target is None:
                raise NotAuthenticated(
                    f"user {user.name!r} has no default project; name one (project)",
                    code="nubes.auth.no_role",
                )
            proj = session.get(Project, target) or session.scalar(
                select(Project).where(Project.name == target)
            )
            roles = _roles(session, user.id, proj.id) if proj else frozenset()
            if delegated_roles is not None:
                roles = _delegated(roles, delegated_roles)
            if proj is None or not roles:
                raise NotAuthenticated(
                    f"user {user.name!r} has no role on project {target!r}",
                    code="nubes.auth.no_role",
                )
            if not proj.enabled:
                raise NotAuthenticated(
                    f"project {proj.name!r} is disabled", code="nubes.auth.disabled"
                )
        now = time.time()
        ttl_end = now + self.core.settings.token_ttl_seconds
        payload = tokens.TokenPayload(
            user_id=user.id,
            project_id=proj.id,
            audit_id=tokens.new_audit_id(),
            issued_at=now,
            expires_at=min(ttl_end, expires_at) if expires_at else ttl_end,
            methods=methods,
            app_cred_id=app_cred_id,
        )
        token = self.core.codec.encrypt(payload)
        return IssuedToken(
            token,
            _context(
                payload, user.name, proj.name, proj.is_admin_project, roles, request_id=request_id
            ),
        )

    # validating -----------------------------------------------------------------------------

    def validate(self, token: str, request_id: str | None = None) -> RequestContext:
        payload = self.core.codec.decrypt(token)
        if payload.expires_at <= time.time():
            raise NotAuthenticated("the token has expired; authenticate again")
        params = {
            "uid": payload.user_id,
            "pid": payload.project_id,
            "aid": payload.audit_id,
            "issued": datetime.fromtimestamp(payload.issued_at, UTC),
        }
        with self.core.db.connection() as conn:
            rows = conn.execute(_VALIDATE, params).all()
            cred = (
                conn.execute(_APP_CREDENTIAL, {"cid": payload.app_cred_id}).first()
                if payload.app_cred_id
                else None
            )
        if not rows:
            raise NotAuthenticated("the token's user or project no longer exists")
        first = rows[0]
        if first.revoked:
            raise NotAuthenticated("the token has been revoked")
        if not first.user_enabled or not first.project_enabled:
            raise NotAuthenticated(
                "the token's user or project is disabled", code="nubes.auth.disabled"
            )
        roles = frozenset(Role[r.role] for r in rows if r.role is not None)
        if payload.app_cred_id:
            if cred is None:
                raise NotAuthenticated("the token's application credential was deleted")
            if cred.expires_at is not None and cred.expires_at <= datetime.now(UTC):
                raise NotAuthenticated("the token's application credential has expired")
            roles = _delegated(roles, cred.roles)
        if not roles:
            raise NotAuthenticated("the token's user no longer has a role on its project")
        return _context(
            payload,
            first.user_name,
            first.project_name,
            first.is_admin_project,
            roles,
            request_id=request_id,
        )

    # revoking -------------------------------------------------------------------------------

    def revoke(self, ctx: RequestContext, token: str) -> None:
        """Revoke ``token``: a caller may revoke their own tokens; an admin any token."""
        target = self.core.codec.decrypt(token)
        if target.user_id != ctx.user_id:
            policy.enforce(ctx, "identity:token:revoke_any")
        else:
            policy.enforce(ctx, "identity:token:revoke")
        with self.core.db.transaction() as session:
            revoke_token(session, self.core.settings, target.audit_id)
            events.record(
                session,
                ctx,
                "token.revoked",
                "user",
                target.user_id,
                project_id=target.project_id,
                payload={"audit_id": target.audit_id},
            )

    def rotate_keys(self, ctx: RequestContext) -> int:
        policy.enforce(ctx, "identity:token:rotate_keys")
        with self.core.db.transaction() as session:
            serial = tokens.rotate(session, self.core.settings.token_max_active_keys)
            events.record(session, ctx, "token.keys_rotated", "token_key", str(serial))
        self.core.codec.reload()
        return serial


def _roles(session: Session, user_id: str, project_id: str) -> frozenset[Role]:
    names = session.scalars(
        select(RoleAssignment.role).where(
            RoleAssignment.user_id == user_id, RoleAssignment.project_id == project_id
        )
    )
    return frozenset(Role[n] for n in names)


def _delegated(held: frozenset[Role], delegated: str) -> frozenset[Role]:
    """An application credential carries at most the roles it was given, and never more than
    its user still holds (roles imply the lower ones)."""
    given = {Role[r] for r in delegated.split(",") if r}
    return frozenset(r for r in given if any(h >= r for h in held))


def _context(
    payload: tokens.TokenPayload,
    user_name: str,
    project_name: str,
    is_admin_project: bool,
    roles: frozenset[Role],
    *,
    request_id: str | None,
) -> RequestContext:
    return RequestContext(
        user_id=payload.user_id,
        project_id=payload.project_id,
        roles=roles,
        is_cloud_admin=is_admin_project and Role.admin in roles,
        request_id=request_id,
        audit_id=payload.audit_id,
        user_name=user_name,
        project_name=project_name,
        expires_at=payload.expires_at,
        methods=payload.methods,
    )


# Validation runs on every request: one statement, built once. Rows: one per role the user
# holds on the project (a NULL role when none), each carrying the user and project state and
# whether a revocation event matches the token.
_U = User.__table__
_P = Project.__table__
_RA = RoleAssignment.__table__
_REV = TokenRevocation.__table__
_AC = ApplicationCredential.__table__
_ISSUED = bindparam("issued", type_=_REV.c.issued_before.type)
_VALIDATE = (
    select(
        _U.c.name.label("user_name"),
        _U.c.enabled.label("user_enabled"),
        _P.c.name.label("project_name"),
        _P.c.enabled.label("project_enabled"),
        _P.c.is_admin_project,
        _RA.c.role,
        exists()
        .where(
            or_(
                _REV.c.audit_id == bindparam("aid"),
                and_(_REV.c.user_id == bindparam("uid"), _REV.c.issued_before >= _ISSUED),
                and_(_REV.c.project_id == bindparam("pid"), _REV.c.issued_before >= _ISSUED),
            )
        )
        .label("revoked"),
    )
    .select_from(
        _U.join(_P, _P.c.id == bindparam("pid")).outerjoin(
            _RA, and_(_RA.c.user_id == _U.c.id, _RA.c.project_id == _P.c.id)
        )
    )
    .where(_U.c.id == bindparam("uid"))
)
_APP_CREDENTIAL = select(_AC.c.roles, _AC.c.expires_at).where(_AC.c.id == bindparam("cid"))
