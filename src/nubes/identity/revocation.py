"""Revocation events: written in the transaction of the change that causes them, checked on
every token validation, pruned once no token they could match is still alive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from nubes.config import Settings
from nubes.store.models import TokenRevocation


def _add(session: Session, settings: Settings, **target: str) -> None:
    now = datetime.now(UTC)
    session.execute(delete(TokenRevocation).where(TokenRevocation.expires_at < now))
    session.add(
        TokenRevocation(
            issued_before=now,
            expires_at=now + timedelta(seconds=settings.token_ttl_seconds + 60),
            **target,
        )
    )


def revoke_token(session: Session, settings: Settings, audit_id: str) -> None:
    _add(session, settings, audit_id=audit_id)


def revoke_user_tokens(session: Session, settings: Settings, user_id: str) -> None:
    _add(session, settings, user_id=user_id)


def revoke_project_tokens(session: Session, settings: Settings, project_id: str) -> None:
    _add(session, settings, project_id=project_id)
