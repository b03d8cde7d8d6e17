"""Keypairs: SSH public keys owned by a user (as in Nova), counted against the user's
``key_pairs`` quota in the same transaction as the row."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nubes.compute.keys import generate_keypair, parse_public_key
from nubes.domain.context import RequestContext
from nubes.domain.errors import AlreadyExists, NotFound
from nubes.identity import policy, quotas
from nubes.identity.core import IdentityCore
from nubes.identity.users import find_user
from nubes.store import events
from nubes.store.models import Keypair
from nubes.store.query import delete_row, paginate


@dataclass(frozen=True)
class NewKeypair:
    keypair: Keypair
    private_key: str | None


class KeypairService:
    def __init__(self, core: IdentityCore) -> None:
        self.core = core

    def _owner_id(self, session: Session, ctx: RequestContext, user: str | None) -> str:
        """The caller's own keypairs, or (cloud admins only) another user's."""
        if user is None or user in (ctx.user_id, ctx.user_name):
            assert ctx.user_id is not None
            return ctx.user_id
        if not ctx.is_cloud_admin:
            raise NotFound(f"no user {user!r}", code="nubes.user.not_found")
        return find_user(session, user).id

    def _find(self, session: Session, owner_id: str, name: str) -> Keypair:
        row = session.scalar(
            select(Keypair).where(Keypair.user_id == owner_id, Keypair.name == name)
        )
        if row is None:
            raise NotFound(f"no keypair {name!r}", code="nubes.keypair.not_found")
        return row

    def create(
        self,
        ctx: RequestContext,
        name: str,
        *,
        public_key: str | None = None,
        key_type: str = "ssh-ed25519",
    ) -> NewKeypair:
        """Import ``public_key``, or generate a pair and return the private key (once)."""
        policy.enforce(ctx, "compute:keypair:create", owner_id=ctx.user_id)
        private = None
        if public_key is not None:
            parsed = parse_public_key(public_key)
        else:
            parsed, private = generate_keypair(key_type, comment=name)
        assert ctx.user_id is not None
        assert ctx.project_id is not None
        with self.core.db.transaction() as session:
            if session.scalar(
                select(Keypair.id).where(Keypair.user_id == ctx.user_id, Keypair.name == name)
            ):
                raise AlreadyExists(
                    f"you already have a keypair {name!r}", code="nubes.keypair.exists"
                )
            quotas.charge(
                session,
                ctx.project_id,
                {"key_pairs": 1},
                self.core.settings.default_quotas,
                user_id=ctx.user_id,
            )
            row = Keypair(
                name=name,
                user_id=ctx.user_id,
                project_id=ctx.project_id,
                type=parsed.type,
                public_key=parsed.public_key,
                fingerprint=parsed.fingerprint,
            )
            session.add(row)
            try:
                session.flush()
            except IntegrityError as exc:
                raise AlreadyExists(
                    f"you already have a keypair {name!r}", code="nubes.keypair.exists"
                ) from exc
            events.record(
                session,
                ctx,
                "keypair.created",
                "keypair",
                row.id,
                project_id=ctx.project_id,
                payload={"name": name},
            )
            return NewKeypair(row, private)

    def list_keypairs(
        self,
        ctx: RequestContext,
        *,
        user: str | None = None,
        name: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[Keypair]:
        with self.core.db.read() as session:
            owner = self._owner_id(session, ctx, user)
            policy.enforce(ctx, "compute:keypair:list", owner_id=owner)
            stmt = select(Keypair).where(Keypair.user_id == owner)
            if name is not None:
                stmt = stmt.where(Keypair.name == name)
            return paginate(
                session,
                stmt,
                Keypair,
                limit=limit,
                marker=marker,
                sort_column=Keypair.name,
                key_column=Keypair.name,
            )

    def get(self, ctx: RequestContext, name: str, *, user: str | None = None) -> Keypair:
        with self.core.db.read() as session:
            owner = self._owner_id(session, ctx, user)
            row = self._find(session, owner, name)
            policy.enforce(ctx, "compute:keypair:show", owner_id=owner)
            return row

    def delete(self, ctx: RequestContext, name: str, *, user: str | None = None) -> None:
        with self.core.db.transaction() as session:
            owner = self._owner_id(session, ctx, user)
            row = self._find(session, owner, name)
            policy.enforce(ctx, "compute:keypair:delete", owner_id=owner)
            # Release first: it locks the usage row before the keypair row, the order create
            # takes, so a delete and a create cannot deadlock.
            quotas.release(session, row.project_id, {"key_pairs": 1}, user_id=row.user_id)
            if not delete_row(session, Keypair, row.id):
                raise NotFound(f"no keypair {name!r}", code="nubes.keypair.not_found")
            events.record(
                session,
                ctx,
                "keypair.deleted",
                "keypair",
                row.id,
                project_id=row.project_id,
                payload={"name": name},
            )
