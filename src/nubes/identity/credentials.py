"""EC2-style credentials (access + secret, for the EC2 face's signatures) and application
credentials (id + secret standing in for a user's password, optionally expiring, revocable).

The EC2 secret must be recoverable to check request signatures, so it is stored encrypted
with the credential key (``STATE_DIR/credential.key``; controllers sharing a database share
that file). Application-credential secrets are only ever hashed.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubes.domain.context import RequestContext
from nubes.domain.errors import AlreadyExists, InvalidInput, NotFound
from nubes.domain.roles import Role
from nubes.identity import policy
from nubes.identity.core import IdentityCore
from nubes.identity.projects import find_project
from nubes.identity.users import find_user
from nubes.store import events
from nubes.store.models import ApplicationCredential, Ec2Credential, RoleAssignment, User

CREDENTIAL_KEY_FILE = "credential.key"


def load_credential_key(state_dir: Path) -> Fernet:
    """Read the credential key, creating it (mode 0600) the first time."""
    path = state_dir / CREDENTIAL_KEY_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return Fernet(path.read_bytes().strip())


@dataclass(frozen=True)
class Ec2Secret:
    access: str
    secret: str
    user_id: str
    project_id: str
    created_at: datetime


@dataclass(frozen=True)
class NewAppCredential:
    credential: ApplicationCredential
    secret: str


class CredentialService:
    def __init__(self, core: IdentityCore) -> None:
        self.core = core
        self._fernet: Fernet | None = None

    @property
    def fernet(self) -> Fernet:
        if self._fernet is None:
            self._fernet = load_credential_key(self.core.settings.state_dir)
        return self._fernet

    def _owner(self, session: Session, ctx: RequestContext, user: str | None, action: str) -> User:
        row = find_user(session, user or ctx.user_id or "")
        if not ctx.is_cloud_admin and row.id != ctx.user_id:
            raise NotFound(f"no user {user!r}", code="nubes.user.not_found")
        policy.enforce(ctx, action, owner_id=row.id)
        return row

    # EC2 ------------------------------------------------------------------------------------

    def create_ec2(
        self, ctx: RequestContext, user: str | None = None, project: str | None = None
    ) -> Ec2Secret:
        with self.core.db.transaction() as session:
            owner = self._owner(session, ctx, user, "identity:ec2_credential:create")
            pid = find_project(session, project).id if project else ctx.project_id
            has_role = session.scalar(
                select(
                    exists().where(
                        RoleAssignment.user_id == owner.id, RoleAssignment.project_id == pid
                    )
                )
            )
            if pid is None or not has_role:
                raise InvalidInput(f"project: user {owner.name!r} has no role on it")
            secret = secrets.token_hex(20)
            row = Ec2Credential(
                access=secrets.token_hex(16),
                secret_encrypted=self.fernet.encrypt(secret.encode()).decode(),
                user_id=owner.id,
                project_id=pid,
            )
            session.add(row)
            session.flush()
            events.record(
                session, ctx, "ec2_credential.created", "ec2_credential", row.access, project_id=pid
            )
            return Ec2Secret(row.access, secret, owner.id, pid, row.created_at)

    def list_ec2(self, ctx: RequestContext, user: str | None = None) -> list[Ec2Secret]:
        with self.core.db.read() as session:
            owner = self._owner(session, ctx, user, "identity:ec2_credential:list")
            rows = session.scalars(
                select(Ec2Credential)
                .where(Ec2Credential.user_id == owner.id)
                .order_by(Ec2Credential.created_at)
            )
            return [self._reveal(r) for r in rows]

    def _reveal(self, row: Ec2Credential) -> Ec2Secret:
        secret = self.fernet.decrypt(row.secret_encrypted.encode()).decode()
        return Ec2Secret(row.access, secret, row.user_id, row.project_id, row.created_at)

    def lookup_ec2(self, access: str) -> Ec2Secret:
        """For the EC2 face: the secret behind an access key (no policy: the caller proves
        possession by signing)."""
        with self.core.db.read() as session:
            row = session.get(Ec2Credential, access)
            if row is None:
                raise NotFound("no such EC2 access key", code="nubes.credential.not_found")
            return self._reveal(row)

    def delete_ec2(self, ctx: RequestContext, access: str, user: str | None = None) -> None:
        with self.core.db.transaction() as session:
            owner = self._owner(session, ctx, user, "identity:ec2_credential:delete")
            row = session.get(Ec2Credential, access)
            if row is None or row.user_id != owner.id:
                raise NotFound(f"no EC2 credential {access!r}", code="nubes.credential.not_found")
            session.delete(row)
            events.record(
                session,
                ctx,
                "ec2_credential.deleted",
                "ec2_credential",
                access,
                project_id=row.project_id,
            )

    # application credentials ----------------------------------------------------------------

    def create_app(
        self,
        ctx: RequestContext,
        name: str,
        *,
        description: str = "",
        expires_at: datetime | None = None,
        roles: list[str] | None = None,
        user: str | None = None,
    ) -> NewAppCredential:
        """Bound to the caller's current project; its roles are a subset of the caller's."""
        if expires_at is not None:
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)
            if expires_at <= datetime.now(UTC):
                raise InvalidInput("expires_at: must be in the future")
        held = ctx.highest_role
        wanted = {Role.parse(r) for r in roles} if roles else set(ctx.roles)
        if held is None or any(r > held for r in wanted):
            raise InvalidInput(
                f"roles: you can delegate only roles up to your own "
                f"({held.name if held else 'none'})"
            )
        secret = secrets.token_urlsafe(32)
        secret_hash = self.core.hasher.hash(secret)
        with self.core.db.transaction() as session:
            owner = self._owner(session, ctx, user, "identity:app_credential:create")
            if owner.id != ctx.user_id:
                raise InvalidInput("user: application credentials are made by their own user")
            row = ApplicationCredential(
                name=name,
                description=description,
                secret_hash=secret_hash,
                user_id=owner.id,
                project_id=ctx.project_id,
                roles=",".join(sorted(r.name for r in wanted)),
                expires_at=expires_at,
            )
            session.add(row)
            try:
                session.flush()
            except IntegrityError as exc:
                raise AlreadyExists(
                    f"you already have an application credential named {name!r}",
                    code="nubes.credential.exists",
                ) from exc
            events.record(
                session,
                ctx,
                "app_credential.created",
                "app_credential",
                row.id,
                project_id=ctx.project_id,
            )
            return NewAppCredential(row, secret)

    def list_app(self, ctx: RequestContext, user: str | None = None) -> list[ApplicationCredential]:
        with self.core.db.read() as session:
            owner = self._owner(session, ctx, user, "identity:app_credential:list")
            return list(
                session.scalars(
                    select(ApplicationCredential)
                    .where(ApplicationCredential.user_id == owner.id)
                    .order_by(ApplicationCredential.name)
                )
            )

    def delete_app(self, ctx: RequestContext, ref: str, user: str | None = None) -> None:
        """Deleting it also kills every token issued from it (checked at validation)."""
        with self.core.db.transaction() as session:
            owner = self._owner(session, ctx, user, "identity:app_credential:delete")
            row = session.get(ApplicationCredential, ref) or session.scalar(
                select(ApplicationCredential).where(
                    ApplicationCredential.user_id == owner.id, ApplicationCredential.name == ref
                )
            )
            if row is None or row.user_id != owner.id:
                raise NotFound(
                    f"no application credential {ref!r}", code="nubes.credential.not_found"
                )
            session.delete(row)
            events.record(
                session,
                ctx,
                "app_credential.deleted",
                "app_credential",
                row.id,
                project_id=row.project_id,
            )
